//! Bearer tokens mapped to principals, file:// confinement and handle key
//! rotation.

use super::*;

/// Two principals: alice may use memory://m/alice/ and a file directory,
/// with two sessions at most; bob may use memory://m/bob/.
fn auth_config(file_root: &Path) -> String {
    let hash = |t: &str| hex::encode(sluice::auth::token_hash(t));
    format!(
        "auth.principals.alice.token-sha256: {}\n\
         auth.principals.alice.prefixes: [memory://m/alice/, 'file://{}/alice']\n\
         auth.principals.alice.max-sessions: 2\n\
         auth.principals.bob.token-sha256: {}\n\
         auth.principals.bob.prefixes: memory://m/bob\n",
        hash("alice-token"),
        file_root.display(),
        hash("bob-token")
    )
}

fn as_user<T>(token: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if !token.is_empty() {
        r.metadata_mut()
            .insert("authorization", token.parse().unwrap());
    }
    r
}

#[tokio::test]
async fn bearer_tokens_map_to_principals_with_prefixes_and_session_caps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data/files");
    let server = TestServer::start_in(&dir.path().join("data"), &auth_config(&root)).await;
    let mut c = server.client().await;
    let (alice, bob) = ("Bearer alice-token", "Bearer bob-token");
    let base = c.clone();
    let open_as = |token: &'static str, path: &str| {
        let mut c = base.clone();
        let path = path.to_string();
        async move {
            c.open(as_user(
                token,
                OpenRequest {
                    path,
                    inject_entropy: false,
                },
            ))
            .await
            .map(|r| r.into_inner().session_id)
        }
    };

    // No token, a wrong one, a malformed header: UNAUTHENTICATED.
    for token in ["", "Bearer nope", "Basic YWxpY2U6eA==", "Bearer "] {
        let msg = expect_code(
            open_as(token, "memory://m/alice/x").await,
            Code::Unauthenticated,
        );
        assert!(msg.contains("token") || msg.contains("Bearer"), "{msg}");
    }
    // Outside the prefixes, segment-wise: PERMISSION_DENIED.
    for path in [
        "memory://m/bob/x",
        "memory://m/alice2/x",
        "memory://other/alice/x",
        &format!("file://{}/bob/x", root.display()),
    ] {
        let msg = expect_code(open_as(alice, path).await, Code::PermissionDenied);
        assert!(msg.contains("alice"), "{msg}");
    }

    // Alice's session and handle are hers alone.
    let sid = open_as(alice, "memory://m/alice/part-0").await.unwrap();
    let write_as = |token: &'static str, sid: &str, offset: u64, data: &'static [u8]| {
        let mut c = base.clone();
        let msg = WriteRequest {
            crc32c: None,
            session_id: sid.to_string(),
            offset,
            data: bytes::Bytes::from_static(data),
        };
        async move {
            c.write(as_user(token, tokio_stream::iter(vec![msg])))
                .await
                .map(|r| r.into_inner().position)
        }
    };
    assert_eq!(write_as(alice, &sid, 0, b"alice's").await.unwrap(), 7);
    expect_code(
        write_as(bob, &sid, 7, b"bob's").await,
        Code::PermissionDenied,
    );
    expect_code(
        write_as("", &sid, 7, b"anyone's").await,
        Code::Unauthenticated,
    );
    let persist_req = || PersistRequest {
        session_id: sid.clone(),
    };
    expect_code(
        c.persist(as_user(bob, persist_req())).await,
        Code::PermissionDenied,
    );
    let handle = c
        .persist(as_user(alice, persist_req()))
        .await
        .unwrap()
        .into_inner()
        .handle;
    let recover_req = || RecoverRequest {
        handle: handle.clone(),
    };
    expect_code(
        c.recover(as_user(bob, recover_req())).await,
        Code::PermissionDenied,
    );
    expect_code(
        c.commit(as_user(
            bob,
            CommitRequest {
                handle: handle.clone(),
                after_recovery: false,
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.cleanup(as_user(
            bob,
            CleanupRequest {
                handle: handle.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.abort(as_user(
            bob,
            AbortRequest {
                session_id: sid.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    let close_req = || CloseForCommitRequest {
        session_id: sid.clone(),
    };
    expect_code(
        c.close_for_commit(as_user(bob, close_req())).await,
        Code::PermissionDenied,
    );
    let commit_handle = c
        .close_for_commit(as_user(alice, close_req()))
        .await
        .unwrap()
        .into_inner()
        .handle;
    // The retry path of CloseForCommit (from sled) is guarded too.
    expect_code(
        c.close_for_commit(as_user(bob, close_req())).await,
        Code::PermissionDenied,
    );
    c.commit(as_user(
        alice,
        CommitRequest {
            handle: commit_handle,
            after_recovery: false,
        },
    ))
    .await
    .unwrap();

    // The read side: Alice reads hers, Bob cannot read, list, rename or
    // delete it.
    let read_req = || ReadRequest {
        path: "memory://m/alice/part-0".into(),
        offset: 0,
        length: 0,
    };
    let mut stream = c
        .read(as_user(alice, read_req()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        &stream.message().await.unwrap().unwrap().data[..],
        b"alice's"
    );
    let bob_reads = c.read(as_user(bob, read_req())).await;
    expect_code(bob_reads.map(drop), Code::PermissionDenied);
    expect_code(
        c.list(as_user(
            bob,
            ListRequest {
                path: "memory://m/".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.rename(as_user(
            bob,
            RenameRequest {
                from: "memory://m/alice/part-0".into(),
                to: "memory://m/bob/stolen".into(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.rename(as_user(
            alice,
            RenameRequest {
                from: "memory://m/alice/part-0".into(),
                to: "memory://m/bob/gift".into(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.delete(as_user(
            bob,
            DeleteRequest {
                path: "memory://m/alice/part-0".into(),
                recursive: false,
            },
        ))
        .await,
        Code::PermissionDenied,
    );

    // Two sessions at most for Alice; a third waits for one to end.
    let s1 = open_as(alice, "memory://m/alice/s1").await.unwrap();
    let _s2 = open_as(alice, &format!("file://{}/alice/s2", root.display()))
        .await
        .unwrap();
    let msg = expect_code(
        open_as(alice, "memory://m/alice/s3").await,
        Code::ResourceExhausted,
    );
    assert!(msg.contains("max-sessions"), "{msg}");
    // Bob's sessions are his own count.
    open_as(bob, "memory://m/bob/b1").await.unwrap();
    c.abort(as_user(
        alice,
        AbortRequest {
            session_id: s1.clone(),
        },
    ))
    .await
    .unwrap();
    open_as(alice, "memory://m/alice/s3").await.unwrap();
}

#[tokio::test]
async fn file_confinement_holds_for_every_call() {
    let server = TestServer::start("").await;
    let mut c = server.client().await;
    let root = server.file_root();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"outside the root").unwrap();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::write(root.join("in/mine"), b"inside").unwrap();
    // A directory link and a file link, both pointing out of the root.
    std::os::unix::fs::symlink(outside.path(), root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("in/filelink")).unwrap();
    let at = |p: &str| format!("file://{}/{p}", root.display());
    let denied_or_invalid =
        |code: Code| matches!(code, Code::PermissionDenied | Code::InvalidArgument);

    let mut checks: Vec<(String, Code)> = Vec::new();
    let mut check = |what: &str, r: Result<(), tonic::Status>| {
        let code = r.err().map(|s| s.code()).unwrap_or(Code::Ok);
        checks.push((what.to_string(), code));
    };
    check("open ..", open(&mut c, &at("in/../../x")).await.map(drop));
    check(
        "open via dirlink",
        open(&mut c, &at("dirlink/x")).await.map(drop),
    );
    check(
        "open via dirlink, new dirs",
        open(&mut c, &at("dirlink/a/b/x")).await.map(drop),
    );
    check(
        "read filelink",
        read_all(&mut c, &at("in/filelink"), 0, 0).await.map(drop),
    );
    check(
        "read via dirlink",
        read_all(&mut c, &at("dirlink/secret"), 0, 0)
            .await
            .map(drop),
    );
    check(
        "stat via dirlink",
        stat(&mut c, &at("dirlink/secret")).await.map(drop),
    );
    check(
        "list dirlink",
        list_names(&mut c, &at("dirlink")).await.map(drop),
    );
    check(
        "delete via dirlink",
        delete(&mut c, &at("dirlink/secret"), false).await.map(drop),
    );
    check(
        "delete dirlink recursively",
        delete(&mut c, &at("dirlink"), true).await.map(drop),
    );
    check(
        "delete filelink",
        delete(&mut c, &at("in/filelink"), false).await.map(drop),
    );
    let base = c.clone();
    let rename = |from: String, to: String| {
        let mut c = base.clone();
        async move { c.rename(RenameRequest { from, to }).await.map(drop) }
    };
    check(
        "rename out via dirlink",
        rename(at("in/mine"), at("dirlink/moved")).await,
    );
    check(
        "rename in from dirlink",
        rename(at("dirlink/secret"), at("in/got")).await,
    );
    check(
        "rename filelink",
        rename(at("in/filelink"), at("in/got2")).await,
    );
    check(
        "rename to ..",
        rename(
            at("in/mine"),
            format!("file://{}/../escaped", root.display()),
        )
        .await,
    );
    check(
        "rename outside the root",
        rename(
            at("in/mine"),
            format!("file://{}/moved", outside.path().display()),
        )
        .await,
    );
    check(
        "mkdirs via dirlink",
        c.mkdirs(MkdirsRequest {
            path: at("dirlink/newdir"),
        })
        .await
        .map(drop),
    );
    // Opening over a link is allowed (nothing is written until the
    // commit), but the commit never writes through it.
    let sid = open(&mut c, &at("in/filelink")).await.unwrap();
    write_at(&mut c, &sid, 0, b"overwritten?").await.unwrap();
    let (h, _) = close(&mut c, &sid).await.unwrap();
    expect_code(commit(&mut c, &h, false).await, Code::AlreadyExists);
    let wrong: Vec<_> = checks
        .iter()
        .filter(|(_, code)| !denied_or_invalid(*code))
        .collect();
    assert!(wrong.is_empty(), "escapes not refused: {wrong:?}");
    // Nothing outside changed, nothing inside was lost.
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside the root");
    let outside_names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_names, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(std::fs::read(root.join("in/mine")).unwrap(), b"inside");
    // And plain use inside the root still works.
    rename(at("in/mine"), at("in/renamed")).await.unwrap();
    assert!(delete(&mut c, &at("in/renamed"), false).await.unwrap());
}

#[tokio::test]
async fn rotated_signing_keys_keep_old_handles_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (old, new) = ("11".repeat(32), "22".repeat(32));
    let before = TestServer::start_in(
        &data,
        &format!("handle.signing.key: \"{old}\"\nhandle.signing.key-id: k2026a\n"),
    )
    .await;
    let mut c = before.client().await;
    let target = format!("file://{}/files/rotated", data.display());
    let sid = open(&mut c, &target).await.unwrap();
    write_at(&mut c, &sid, 0, b"signed by the old key|")
        .await
        .unwrap();
    let (old_handle, _) = persist(&mut c, &sid).await.unwrap();
    before.stop().await;

    // Rotated: a new signing key, the old one kept for verification.
    let rotated = TestServer::start_in(
        &data,
        &format!(
            "handle.signing.key: \"{new}\"\nhandle.signing.key-id: k2026b\n\
             handle.verification.k2026a.key: \"{old}\"\n"
        ),
    )
    .await;
    let mut c = rotated.client().await;
    let (sid, pos) = recover(&mut c, &old_handle).await.unwrap();
    write_at(&mut c, &sid, pos, b"and by the new")
        .await
        .unwrap();
    let (new_handle, _) = close(&mut c, &sid).await.unwrap();
    rotated.stop().await;

    // Retired: the old key gone, its handles are refused; new ones work.
    let retired = TestServer::start_in(
        &data,
        &format!("handle.signing.key: \"{new}\"\nhandle.signing.key-id: k2026b\n"),
    )
    .await;
    let mut c = retired.client().await;
    let msg = expect_code(recover(&mut c, &old_handle).await, Code::InvalidArgument);
    assert!(msg.contains("k2026a"), "{msg}");
    commit(&mut c, &new_handle, false).await.unwrap();
    assert_eq!(
        std::fs::read(data.join("files/rotated")).unwrap(),
        b"signed by the old key|and by the new"
    );
}
