//! Multipart cases for the object-store backends, sized from the part size
//! the server reports in `Capabilities`: chunks bigger than a part, three
//! parts and a tail, persists exactly on a part boundary (an empty tail),
//! and two recoveries from one handle.

use crate::harness::*;

/// Deterministic bytes, different for every seed.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` from `offset` in one Write call of `chunk`-sized messages.
pub async fn write_all(c: &mut Client, sid: &str, offset: u64, data: &[u8], chunk: usize) -> u64 {
    let chunks = data
        .chunks(chunk)
        .scan(offset, |at, piece| {
            let this = *at;
            *at += piece.len() as u64;
            Some((this, piece.to_vec()))
        })
        .collect();
    write_chunks(c, sid, chunks).await.unwrap()
}

pub async fn run_all(t: &Target) {
    let part = crate::conformance::part_size(t).await;
    assert!(part > 0, "{} reports no part size", t.base);
    run_with_part(t, part).await;
}

/// The multipart cases with `part` as the unit their sizes are made of
/// (for `hdfs://`, which has no parts: its block size).
pub async fn run_with_part(t: &Target, part: usize) {
    eprintln!("multipart cases on {} with {part}-byte parts", t.base);
    chunk_bigger_than_a_part(t, part).await;
    three_parts_and_a_tail(t, part).await;
    persist_exactly_on_a_part_boundary(t, part).await;
    recover_twice_from_one_handle(t, part).await;
}

async fn committed(t: &Target, name: &str) -> Vec<u8> {
    t.store
        .read(name)
        .await
        .unwrap_or_else(|| panic!("{name} was not committed"))
}

async fn chunk_bigger_than_a_part(t: &Target, part: usize) {
    eprintln!("multipart case: chunk_bigger_than_a_part");
    let c = &mut t.client.clone();
    let data = bytes(1, part * 5 / 2);
    let sid = open(c, &t.uri("mp-big-chunk")).await.unwrap();
    assert_eq!(
        write_all(c, &sid, 0, &data, data.len()).await,
        data.len() as u64
    );
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, data.len() as u64);
    commit(c, &h, false).await.unwrap();
    assert!(
        committed(t, "mp-big-chunk").await == data,
        "content differs"
    );
}

async fn three_parts_and_a_tail(t: &Target, part: usize) {
    eprintln!("multipart case: three_parts_and_a_tail");
    let c = &mut t.client.clone();
    let first = bytes(2, part * 3 + 1234);
    // Shorter than a part (and than GCS's 256 KiB component minimum).
    let short = bytes(8, (part / 2).clamp(1, 1000));
    let lost = bytes(3, part * 2);
    let last = bytes(4, part + 77);
    let chunk = (part / 3).max(1);
    let sid = open(c, &t.uri("mp-tail")).await.unwrap();
    write_all(c, &sid, 0, &first, chunk).await;
    let (r0, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    assert!(
        !cleanup(c, &r0).await.unwrap(),
        "a persist of a part's worth or more uploads it as a part, not as a tail object"
    );
    write_all(c, &sid, pos, &short, chunk).await;
    let (r, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, (first.len() + short.len()) as u64);
    // More parts go up after the handle, then the session dies.
    write_all(c, &sid, pos, &lost, chunk).await;
    abort(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r).await.unwrap();
    assert_eq!(pos, (first.len() + short.len()) as u64);
    write_all(c, &sid2, pos, &last, chunk).await;
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert!(
        committed(t, "mp-tail").await == [first, short, last].concat(),
        "content differs"
    );
    assert!(
        !cleanup(c, &r).await.unwrap(),
        "commit already removed the handle's tail"
    );
}

async fn persist_exactly_on_a_part_boundary(t: &Target, part: usize) {
    eprintln!("multipart case: persist_exactly_on_a_part_boundary");
    let c = &mut t.client.clone();
    let first = bytes(5, part * 2);
    let last = bytes(6, 999);
    let sid = open(c, &t.uri("mp-boundary")).await.unwrap();
    write_all(c, &sid, 0, &first, part).await;
    let (r, pos) = persist(c, &sid).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    assert!(
        !cleanup(c, &r).await.unwrap(),
        "a handle on a part boundary has no tail"
    );
    write_all(c, &sid, pos, b"after the boundary", 100).await;
    abort(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r).await.unwrap();
    assert_eq!(pos, first.len() as u64);
    write_all(c, &sid2, pos, &last, 100).await;
    let (h, _) = close(c, &sid2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert!(
        committed(t, "mp-boundary").await == [first, last].concat(),
        "content differs"
    );
}

async fn recover_twice_from_one_handle(t: &Target, part: usize) {
    eprintln!("multipart case: recover_twice_from_one_handle");
    let c = &mut t.client.clone();
    let first = bytes(7, part + 500);
    let sid = open(c, &t.uri("mp-twice")).await.unwrap();
    write_all(c, &sid, 0, &first, part).await;
    let (r, pos) = persist(c, &sid).await.unwrap();
    abort(c, &sid).await.unwrap();
    // The first recovery uploads a part past the handle, then dies.
    let (s1, p1) = recover(c, &r).await.unwrap();
    assert_eq!(p1, pos);
    write_all(c, &s1, p1, &bytes(8, part + 10), part).await;
    abort(c, &s1).await.unwrap();
    // The second starts from the same handle; its part replaces that one.
    let (s2, p2) = recover(c, &r).await.unwrap();
    assert_eq!(p2, pos);
    let second = bytes(9, part / 2 + 3);
    write_all(c, &s2, p2, &second, part).await;
    let (h, _) = close(c, &s2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert!(
        committed(t, "mp-twice").await == [first, second].concat(),
        "content differs"
    );
}
