//! The large vectors a read fills every interval (a row per source, a
//! million of them), asked of the kernel on transparent huge pages where
//! it has them: on 4 KiB pages, filling a fresh 40 MB vector takes ten
//! thousand page faults, and putting its rows in address order misses the
//! TLB on nearly every row. With huge pages, both cost a few percent of
//! that; where the kernel has none (`never`), this is a plain vector.

/// Bytes under which a vector stays on ordinary pages (glibc serves it
/// from its heap, already faulted in).
const HUGE_PAGE: usize = 2 << 20;

/// Bytes from which glibc maps an allocation afresh, and unmaps it when it
/// is freed. Set once, so that glibc does not raise it on its own to the
/// size of the largest block freed (up to 32 MiB): past that, a read's
/// vectors would come from the heap and stay resident after they are
/// dropped (a million sources' reads measured 115 MB resident instead of
/// 86).
const MAPPED_FROM: usize = 2 * HUGE_PAGE;

/// Fixes glibc's threshold (see [`MAPPED_FROM`]), once.
fn fix_threshold() {
    static FIXED: std::sync::Once = std::sync::Once::new();
    FIXED.call_once(|| {
        // SAFETY: mallopt only changes how later allocations are served.
        // Where it fails (not glibc's allocator), nothing changes.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM as libc::c_int);
        }
    });
}

/// An empty vector with room for at least `capacity` values which, from
/// a huge page's worth, glibc maps afresh and unmaps when it is dropped:
/// the vectors of a `u32` a source that a read makes and drops when
/// sources come and go (3.5 MB for a million) each left a hole in the
/// heap that stayed resident (81 MB after a million sources' intervals
/// instead of 71). The room past `capacity` is never touched, so it
/// takes no memory.
pub fn mapped<T>(capacity: usize) -> Vec<T> {
    fix_threshold();
    let size = size_of::<T>().max(1);
    if capacity.saturating_mul(size) < HUGE_PAGE {
        return Vec::with_capacity(capacity);
    }
    Vec::with_capacity(capacity.max(MAPPED_FROM.div_ceil(size)))
}

/// An empty vector with room for `capacity` values, its whole huge pages
/// advised as such before anything touches them.
pub fn with_capacity<T>(capacity: usize) -> Vec<T> {
    fix_threshold();
    let vector: Vec<T> = Vec::with_capacity(capacity);
    let bytes = capacity * size_of::<T>();
    if bytes < 2 * HUGE_PAGE {
        return vector;
    }
    let start = vector.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let len = (start + bytes).saturating_sub(first) / HUGE_PAGE * HUGE_PAGE;
    if len > 0 {
        // SAFETY: advice on pages inside this vector's own allocation, which
        // nothing has touched yet; it changes how they are backed, never
        // their contents. A kernel without transparent huge pages refuses
        // it, which changes nothing.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_vector_holds_what_is_pushed() {
        let mut rows: Vec<u64> = with_capacity(1 << 20);
        assert!(rows.capacity() >= 1 << 20);
        rows.extend(0..1 << 20);
        assert_eq!(rows.len(), 1 << 20);
        assert_eq!(rows[12345], 12345);
        let small: Vec<u8> = with_capacity(10);
        assert!(small.capacity() >= 10);
        let big: Vec<u32> = mapped(1 << 20);
        assert!(big.capacity() * 4 >= MAPPED_FROM);
        assert_eq!(mapped::<u32>(100).capacity(), 100);
    }
}
