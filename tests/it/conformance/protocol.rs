//! Conformance cases for the offset rules (DESIGN.md 1.2), sessions,
//! handles and the status codes of 1.3.

use super::*;
use sluice::proto::{
    CloseForCommitRequest, CommitRequest, PersistRequest, RecoverRequest, WriteRequest,
};

pub async fn offsets_make_writes_idempotent(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("offsets")).await.unwrap();
    // offset == position: appended.
    assert_eq!(write_at(c, &sid, 0, b"abcdef").await.unwrap(), 6);
    // offset + len <= position: an already-accepted retry, nothing appended.
    assert_eq!(write_at(c, &sid, 0, b"abcdef").await.unwrap(), 6);
    assert_eq!(write_at(c, &sid, 2, b"cd").await.unwrap(), 6);
    assert_eq!(write_at(c, &sid, 6, b"").await.unwrap(), 6);
    // offset < position < offset + len: the accepted prefix is skipped.
    assert_eq!(write_at(c, &sid, 4, b"efGHI").await.unwrap(), 9);
    let (h, size) = close(c, &sid).await.unwrap();
    assert_eq!(size, 9);
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "offsets").await, b"abcdefGHI");
}

/// A Write message whose CRC32C is not its data's is DATA_LOSS and
/// applies nothing, wherever it falls in a call; the session goes on, and
/// Persist, Recover, CloseForCommit and Commit answer the file's CRC32C.
pub async fn damaged_messages_are_data_loss_and_crc32c_is_answered(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("crc")).await.unwrap();
    let message = |offset: u64, data: &[u8], crc: u32| WriteRequest {
        session_id: sid.clone(),
        offset,
        data: bytes::Bytes::copy_from_slice(data),
        crc32c: Some(crc),
    };
    let good = crc32c::crc32c(b"abc");
    let msg = expect_code(
        c.write(tokio_stream::iter(vec![message(0, b"abc", good ^ 1)]))
            .await
            .map(|r| r.into_inner().position),
        Code::DataLoss,
    );
    assert!(
        msg.contains("offset 0") && msg.contains("send it again"),
        "{msg}"
    );
    // The second message of a call is damaged: the first is applied.
    expect_code(
        c.write(tokio_stream::iter(vec![
            message(0, b"abc", good),
            message(3, b"def", 7),
        ]))
        .await
        .map(|r| r.into_inner().position),
        Code::DataLoss,
    );
    assert_eq!(write_at(c, &sid, 3, b"def").await.unwrap(), 6);
    let persisted = c
        .persist(PersistRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(persisted.crc32c, crc32c::crc32c(b"abcdef"));
    abort(c, &sid).await.unwrap();
    let recovered = c
        .recover(RecoverRequest {
            handle: persisted.handle,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (recovered.position, recovered.crc32c),
        (6, persisted.crc32c)
    );
    write_at(c, &recovered.session_id, 6, b"ghi").await.unwrap();
    let closed = c
        .close_for_commit(CloseForCommitRequest {
            session_id: recovered.session_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.crc32c, crc32c::crc32c(b"abcdefghi"));
    let published = c
        .commit(CommitRequest {
            handle: closed.handle.clone(),
            after_recovery: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.crc32c, closed.crc32c);
    assert_eq!(committed(t, "crc").await, b"abcdefghi");
    // A commit recognised after the fact answers it too.
    let again = c
        .commit(CommitRequest {
            handle: closed.handle,
            after_recovery: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.crc32c, closed.crc32c);
}

pub async fn offset_gap_is_out_of_range(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("gap")).await.unwrap();
    write_at(c, &sid, 0, b"abc").await.unwrap();
    let msg = expect_code(write_at(c, &sid, 5, b"xyz").await, Code::OutOfRange);
    assert!(
        msg.contains('5') && msg.contains('3'),
        "the message names both numbers: {msg}"
    );
    expect_code(write_at(c, &sid, u64::MAX, b"x").await, Code::OutOfRange);
    // Nothing was appended, and the session goes on.
    assert_eq!(write_at(c, &sid, 3, b"def").await.unwrap(), 6);
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "gap").await, b"abcdef");
}

pub async fn many_chunks_in_one_call_and_across_calls(t: &Target) {
    let c = &mut t.client.clone();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let sid = open(c, &t.uri("chunks")).await.unwrap();
    let mut chunks = Vec::new();
    let mut offset = 0usize;
    for (i, size) in [1usize, 7, 1000, 65_536, 3, 50_000]
        .iter()
        .cycle()
        .enumerate()
    {
        if offset >= 120_000 || i > 50 {
            break;
        }
        chunks.push((offset as u64, data[offset..offset + size].to_vec()));
        offset += size;
    }
    assert_eq!(write_chunks(c, &sid, chunks).await.unwrap(), offset as u64);
    let (r, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, offset as u64, &data[offset..])
        .await
        .unwrap();
    abort(c, &sid).await.unwrap();
    let (sid2, pos) = recover(c, &r).await.unwrap();
    assert_eq!(pos, offset as u64);
    write_at(c, &sid2, pos, &data[offset..]).await.unwrap();
    let (h, size) = close(c, &sid2).await.unwrap();
    assert_eq!(size, data.len() as u64);
    commit(c, &h, false).await.unwrap();
    assert!(committed(t, "chunks").await == data, "content differs");
}

pub async fn unknown_session_is_not_found(t: &Target) {
    let c = &mut t.client.clone();
    let ghost = "00000000-0000-0000-0000-000000000000";
    let msg = expect_code(write_at(c, ghost, 0, b"x").await, Code::NotFound);
    assert!(msg.contains(ghost), "{msg}");
    expect_code(persist(c, ghost).await, Code::NotFound);
    expect_code(close(c, ghost).await, Code::NotFound);
    expect_code(abort(c, ghost).await, Code::NotFound);
    expect_code(persist(c, "").await, Code::InvalidArgument);
}

pub async fn aborted_session_refuses_write_and_persist(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("aborted")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    abort(c, &sid).await.unwrap();
    expect_code(
        write_at(c, &sid, D1.len() as u64, D2).await,
        Code::FailedPrecondition,
    );
    expect_code(persist(c, &sid).await, Code::FailedPrecondition);
    expect_code(close(c, &sid).await, Code::FailedPrecondition);
    // Abort twice is fine, as Flink's close() is.
    abort(c, &sid).await.unwrap();
}

pub async fn abort_without_handle_leaves_nothing(t: &Target) {
    let c = &mut t.client.clone();
    let uploads_before = t.store.open_uploads();
    let sid = open(c, &t.uri("abandoned")).await.unwrap();
    write_at(c, &sid, 0, &vec![7u8; 100_000]).await.unwrap();
    abort(c, &sid).await.unwrap();
    assert_no_staging_left(t, "abandoned").await;
    assert!(t.store.read("abandoned").await.is_none());
    assert_eq!(
        t.store.open_uploads(),
        uploads_before,
        "abort left an upload open"
    );
}

pub async fn commit_never_replaces_existing_target(t: &Target) {
    let c = &mut t.client.clone();
    let a = open(c, &t.uri("taken")).await.unwrap();
    let b = open(c, &t.uri("taken")).await.unwrap();
    write_at(c, &a, 0, D1).await.unwrap();
    write_at(c, &b, 0, D2).await.unwrap();
    let (ha, _) = close(c, &a).await.unwrap();
    let (hb, _) = close(c, &b).await.unwrap();
    commit(c, &ha, false).await.unwrap();
    let msg = expect_code(commit(c, &hb, false).await, Code::AlreadyExists);
    assert!(msg.contains("taken"), "{msg}");
    assert_eq!(
        committed(t, "taken").await,
        D1,
        "the existing target was replaced"
    );
}

pub async fn commit_after_recovery_with_other_size_fails(t: &Target) {
    let c = &mut t.client.clone();
    let a = open(c, &t.uri("sized")).await.unwrap();
    write_at(c, &a, 0, D1).await.unwrap();
    let (ha, _) = close(c, &a).await.unwrap();
    commit(c, &ha, false).await.unwrap();
    let b = open(c, &t.uri("sized")).await.unwrap();
    write_at(c, &b, 0, &cat(&[D1, D2])).await.unwrap();
    let (hb, _) = close(c, &b).await.unwrap();
    let msg = expect_code(commit(c, &hb, true).await, Code::FailedPrecondition);
    let (small, big) = (D1.len().to_string(), (D1.len() + D2.len()).to_string());
    assert!(
        msg.contains(&small) && msg.contains(&big),
        "names both sizes: {msg}"
    );
    assert_eq!(committed(t, "sized").await, D1);
}

pub async fn commit_after_recovery_with_nothing_left_fails(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("vanished")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    t.store.delete("vanished").await;
    let msg = expect_code(commit(c, &h, true).await, Code::FailedPrecondition);
    assert!(msg.contains("neither"), "{msg}");
}

pub async fn commit_of_resume_handle_publishes_its_prefix(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("prefix")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    assert_eq!(commit(c, &r, false).await.unwrap(), D1.len() as u64);
    assert_eq!(committed(t, "prefix").await, D1);
    // The session that was still writing the file can no longer touch it.
    expect_code(
        write_at(c, &sid, (D1.len() + D2.len()) as u64, D3).await,
        Code::FailedPrecondition,
    );
    assert_eq!(committed(t, "prefix").await, D1);
}

pub async fn recover_twice_from_same_handle_fences_first(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("twice")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    let (s1, p1) = recover(c, &r).await.unwrap();
    write_at(c, &s1, p1, D2).await.unwrap();
    let (s2, p2) = recover(c, &r).await.unwrap();
    assert_eq!(p2, D1.len() as u64);
    let msg = expect_code(
        write_at(c, &s1, p1 + D2.len() as u64, D2).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(&s1), "{msg}");
    write_at(c, &s2, p2, D3).await.unwrap();
    let (h, _) = close(c, &s2).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "twice").await, cat(&[D1, D3]));
}

pub async fn tampered_handles_are_invalid_and_change_nothing(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("tamper")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r, _) = persist(c, &sid).await.unwrap();
    let before = t.store.entries().await;
    let mut flipped = r.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let random: Vec<u8> = (0..r.len()).map(|i| (i * 97 % 256) as u8).collect();
    let foreign =
        sluice::handle::HandleKeys::new(vec![9; 32], None).seal(&sluice::proto::HandleBody {
            kind: sluice::proto::HandleKind::Resume as i32,
            target: t.uri("tamper"),
            ..Default::default()
        });
    for (what, bad) in [
        ("flipped byte", flipped),
        ("truncated", r[..r.len() - 3].to_vec()),
        ("random bytes", random),
        ("empty", Vec::new()),
        ("other key", foreign),
    ] {
        let m = expect_code(recover(c, &bad).await, Code::InvalidArgument);
        assert!(m.contains("handle"), "{what}: {m}");
        expect_code(commit(c, &bad, false).await, Code::InvalidArgument);
        expect_code(commit(c, &bad, true).await, Code::InvalidArgument);
        expect_code(cleanup(c, &bad).await, Code::InvalidArgument);
    }
    assert_eq!(
        t.store.entries().await,
        before,
        "a refused handle changed storage"
    );
    // The real handle still works.
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "tamper").await, cat(&[D1, D2]));
}

pub async fn commit_handle_cannot_be_recovered(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("commit-handle")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    let msg = expect_code(recover(c, &h).await, Code::FailedPrecondition);
    assert!(msg.contains("commit it"), "{msg}");
    commit(c, &h, false).await.unwrap();
}

pub async fn cleanup_is_idempotent(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("cleanup")).await.unwrap();
    write_at(c, &sid, 0, D1).await.unwrap();
    let (r1, _) = persist(c, &sid).await.unwrap();
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (_r2, _) = persist(c, &sid).await.unwrap();
    assert_eq!(
        cleanup(c, &r1).await.unwrap(),
        t.requires_cleanup,
        "first cleanup"
    );
    assert!(
        !cleanup(c, &r1).await.unwrap(),
        "second cleanup removes nothing"
    );
    // What the session and the later handle need is untouched.
    write_at(c, &sid, (D1.len() + D2.len()) as u64, D3)
        .await
        .unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "cleanup").await, cat(&[D1, D2, D3]));
    if t.requires_cleanup {
        // The committed file's own handles are cleaned by Cleanup; after it
        // no staging is left.
        let _ = cleanup(c, &_r2).await.unwrap();
    }
    assert!(
        !cleanup(c, &h).await.unwrap(),
        "a commit handle has nothing of its own"
    );
    assert_no_staging_left(t, "cleanup").await;
}

pub async fn concurrent_write_on_one_session_is_aborted(t: &Target) {
    let c = &mut t.client.clone();
    let sid = open(c, &t.uri("concurrent")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut first_client = c.clone();
    let first = tokio::spawn(async move {
        first_client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner().position)
    });
    tx.send(sluice::proto::WriteRequest {
        crc32c: None,
        session_id: sid.clone(),
        offset: 0,
        data: bytes::Bytes::from_static(D1),
    })
    .await
    .unwrap();
    // Wait until the first call has applied its message.
    for _ in 0..200 {
        if persist(c, &sid).await.unwrap().1 == D1.len() as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let msg = expect_code(write_at(c, &sid, D1.len() as u64, D2).await, Code::Aborted);
    assert!(msg.contains(&sid), "{msg}");
    drop(tx);
    assert_eq!(first.await.unwrap().unwrap(), D1.len() as u64);
    // Once the first call is done, writes go on.
    write_at(c, &sid, D1.len() as u64, D2).await.unwrap();
    let (h, _) = close(c, &sid).await.unwrap();
    commit(c, &h, false).await.unwrap();
    assert_eq!(committed(t, "concurrent").await, cat(&[D1, D2]));
}
