//! Conformance cases for the read side and the namespace calls.

use super::*;

pub async fn bad_paths_are_invalid_arguments(t: &Target) {
    let c = &mut t.client.clone();
    for bad in [
        String::new(),
        "relative/path".to_string(),
        t.uri("a/../b"),
        t.uri("a/./b"),
        t.uri("dir/"),
        format!("{}/nul\0byte", t.base),
        "://nothing".to_string(),
        "9s3://bucket/key".to_string(),
    ] {
        expect_code(open(c, &bad).await, Code::InvalidArgument);
    }
    let msg = expect_code(open(c, "gopher://host/file").await, Code::Unimplemented);
    assert!(
        msg.contains("file") && msg.contains("memory"),
        "lists the schemes: {msg}"
    );
    expect_code(open(c, "viewfs://cluster/file").await, Code::Unimplemented);
}

pub async fn read_side_sees_committed_files_only(t: &Target) {
    let c = &mut t.client.clone();
    put_file(c, &t.uri("rs/dir/a.txt"), D1).await;
    put_file(c, &t.uri("rs/dir/sub/b.txt"), D2).await;
    // Staged but not committed: a temp file or an upload with a tail object.
    let sid = open(c, &t.uri("rs/dir/pending.txt")).await.unwrap();
    write_at(c, &sid, 0, D3).await.unwrap();
    persist(c, &sid).await.unwrap();
    let names = list_names(c, &t.uri("rs/dir")).await.unwrap();
    assert_eq!(
        names,
        vec![("a.txt".to_string(), false), ("sub".to_string(), true)],
        "List shows committed files and directories only"
    );
    assert_eq!(
        list_names(c, &format!("{}/", t.uri("rs/dir")))
            .await
            .unwrap()
            .len(),
        2
    );
    let s = stat(c, &t.uri("rs/dir/a.txt")).await.unwrap();
    assert_eq!(
        (s.size, s.is_dir, s.name.as_str()),
        (D1.len() as u64, false, "a.txt")
    );
    assert!(s.path.ends_with("rs/dir/a.txt"), "{}", s.path);
    assert!(stat(c, &t.uri("rs/dir/sub")).await.unwrap().is_dir);
    assert!(exists(c, &t.uri("rs/dir/a.txt")).await);
    assert!(exists(c, &t.uri("rs/dir")).await);
    assert!(
        !exists(c, &t.uri("rs/dir/pending.txt")).await,
        "an uncommitted file is visible"
    );
    expect_code(stat(c, &t.uri("rs/dir/pending.txt")).await, Code::NotFound);
    abort(c, &sid).await.unwrap();
}

pub async fn read_ranges_and_missing_paths(t: &Target) {
    let c = &mut t.client.clone();
    // Several Read chunks on file://; within the 10,000-part cap on
    // object stores with tiny test parts.
    let part = part_size(t).await;
    let len = if part == 0 {
        3_000_000
    } else {
        3_000_000.min(part * 5_000)
    };
    let data: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
    put_file(c, &t.uri("rr/big"), &data).await;
    assert!(
        read_all(c, &t.uri("rr/big"), 0, 0).await.unwrap() == data,
        "whole read differs"
    );
    assert_eq!(
        read_all(c, &t.uri("rr/big"), 10, 5).await.unwrap(),
        &data[10..15]
    );
    let (mid, end) = (len as u64 / 2, len as u64);
    assert!(
        read_all(c, &t.uri("rr/big"), mid, 0).await.unwrap() == data[len / 2..],
        "tail read differs"
    );
    assert_eq!(
        read_all(c, &t.uri("rr/big"), end - 10, 100).await.unwrap(),
        &data[len - 10..]
    );
    assert!(
        read_all(c, &t.uri("rr/big"), end, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let msg = expect_code(
        read_all(c, &t.uri("rr/big"), end + 1, 0).await,
        Code::OutOfRange,
    );
    assert!(msg.contains(&end.to_string()), "{msg}");
    let msg = expect_code(
        read_all(c, &t.uri("rr/missing"), 0, 0).await,
        Code::NotFound,
    );
    assert!(msg.contains("rr/missing"), "{msg}");
    expect_code(stat(c, &t.uri("rr/missing")).await, Code::NotFound);
    expect_code(
        list_names(c, &t.uri("rr/nothing-here")).await,
        Code::NotFound,
    );
    expect_code(
        list_names(c, &t.uri("rr/big")).await,
        Code::FailedPrecondition,
    );
    expect_code(
        read_all(c, &t.uri("rr/../big"), 0, 0).await,
        Code::InvalidArgument,
    );
}

pub async fn delete_files_and_directories(t: &Target) {
    let c = &mut t.client.clone();
    put_file(c, &t.uri("del/one"), D1).await;
    put_file(c, &t.uri("del/tree/a"), D1).await;
    put_file(c, &t.uri("del/tree/deep/b"), D2).await;
    assert!(delete(c, &t.uri("del/one"), false).await.unwrap());
    assert!(
        !delete(c, &t.uri("del/one"), false).await.unwrap(),
        "a missing path is fine"
    );
    assert!(!exists(c, &t.uri("del/one")).await);
    let msg = expect_code(
        delete(c, &t.uri("del/tree"), false).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("recursive"), "{msg}");
    assert!(
        exists(c, &t.uri("del/tree/a")).await,
        "a refused delete removed something"
    );
    assert!(delete(c, &t.uri("del/tree"), true).await.unwrap());
    assert!(!exists(c, &t.uri("del/tree/deep/b")).await);
    assert!(!exists(c, &t.uri("del/tree")).await);
}

pub async fn mkdirs_then_write_inside(t: &Target) {
    let c = &mut t.client.clone();
    c.mkdirs(sluice::proto::MkdirsRequest {
        path: t.uri("mk/a/b/c"),
    })
    .await
    .unwrap();
    c.mkdirs(sluice::proto::MkdirsRequest {
        path: t.uri("mk/a/b/c"),
    })
    .await
    .unwrap();
    put_file(c, &t.uri("mk/a/b/c/f"), D1).await;
    assert!(stat(c, &t.uri("mk/a/b")).await.unwrap().is_dir);
    let msg = expect_code(
        c.mkdirs(sluice::proto::MkdirsRequest {
            path: t.uri("mk/a/b/c/f"),
        })
        .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("file"), "{msg}");
}

pub async fn rename_never_replaces(t: &Target) {
    let c = &mut t.client.clone();
    put_file(c, &t.uri("mv/a"), D1).await;
    put_file(c, &t.uri("mv/taken"), D2).await;
    let base = t.client.clone();
    let rename = |from: String, to: String| {
        let mut c = base.clone();
        async move {
            c.rename(sluice::proto::RenameRequest { from, to })
                .await
                .map(drop)
        }
    };
    rename(t.uri("mv/a"), t.uri("mv/b/moved")).await.unwrap();
    assert!(!exists(c, &t.uri("mv/a")).await);
    assert_eq!(read_all(c, &t.uri("mv/b/moved"), 0, 0).await.unwrap(), D1);
    expect_code(
        rename(t.uri("mv/b/moved"), t.uri("mv/taken")).await,
        Code::AlreadyExists,
    );
    assert_eq!(
        read_all(c, &t.uri("mv/taken"), 0, 0).await.unwrap(),
        D2,
        "rename replaced a file"
    );
    expect_code(
        rename(t.uri("mv/missing"), t.uri("mv/c")).await,
        Code::NotFound,
    );
    // Across schemes (or, for object stores, buckets) there is no rename.
    let elsewhere = if t.base.starts_with("file") {
        "memory://elsewhere/x".to_string()
    } else {
        "file:///tmp/x".to_string()
    };
    expect_code(
        rename(t.uri("mv/taken"), elsewhere).await,
        Code::InvalidArgument,
    );
}
