//! Rebuild the reference programs when bpf-linker changes: cargo cannot see that
//! dependency on its own.
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker is not on PATH; run .ci/setup (it installs the BPF toolchain)");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is UTF-8")
    );
}
