//! Builds the XDP program (`xdpstat-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker; `src/kernel/datapath.rs` embeds the result.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../xdpstat-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xdpstat-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
