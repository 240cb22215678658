//! The seed design xdpstat started from (the cilium/ebpf XDP example),
//! rewritten for the benchmarks: IPv4 source -> u32 packet count in an LRU
//! hash, the first packet inserted with BPF_ANY, later ones added atomically.
//! No IPv6, no VLANs, no bytes, no class totals. The loader sets the map's
//! capacity (the original used 16 entries).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_ANY, xdp_action},
    macros::{map, xdp},
    maps::LruHashMap,
    programs::XdpContext,
};

#[map(name = "SEED_STATS")]
static SEED_STATS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16, 0);

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

#[xdp]
pub fn seed(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN + IPV4_HLEN > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the bounds check above covers the Ethernet and IPv4 headers.
    let (proto, source) = unsafe {
        (
            core::ptr::read_unaligned((start + 12) as *const u16),
            core::ptr::read_unaligned((start + ETH_HLEN + 12) as *const u32),
        )
    };
    if proto != ETH_P_IP_BE {
        return xdp_action::XDP_PASS;
    }
    match SEED_STATS.get_ptr_mut(source) {
        // SAFETY: a live map value; the add is atomic like the original's
        // __sync_fetch_and_add (the BPF target has no AtomicU32::fetch_add).
        Some(count) => unsafe {
            core::arch::asm!("lock *(u32 *)({0} + 0) += {1}", in(reg) count, in(reg) 1u32);
        },
        None => {
            let _ = SEED_STATS.insert(source, 1, BPF_ANY.into());
        }
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
