//! Who may do what: TLS and mutual TLS with throw-away certificates,
//! bearer tokens mapped to principals, file:// confinement, and handle key
//! rotation, all through the real server over gRPC.

use std::path::Path;

use sluice::proto::storage_gateway_client::StorageGatewayClient;
use sluice::proto::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

use crate::harness::*;

/// A CA, and what it signed: a server certificate for 127.0.0.1 and
/// localhost, and a client certificate. Plus a client certificate of
/// another CA.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    rogue_client: (String, String),
}

fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice test CA");
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    names: &[&str],
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let ca = ca();
        let other = ca_other();
        Pki {
            server: leaf(&["localhost", "127.0.0.1"], &ca),
            client: leaf(&["job-a"], &ca),
            rogue_client: leaf(&["job-a"], &other),
            ca: ca.pem(),
        }
    }

    /// The server's files in `dir`; returns the `rpc.tls.*` config.
    fn server_config(&self, dir: &Path, mutual: bool) -> String {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let mut yaml = format!(
            "rpc.tls.cert-file: {}\nrpc.tls.key-file: {}\n",
            write("server.pem", &self.server.0),
            write("server.key", &self.server.1)
        );
        if mutual {
            yaml += &format!("rpc.tls.client-ca-file: {}\n", write("ca.pem", &self.ca));
        }
        yaml
    }
}

fn ca_other() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    ca()
}

/// A TLS channel to `addr` trusting `ca`, showing `identity` if any.
async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Client, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(StorageGatewayClient::new(channel))
}

/// Writes, closes and commits a small memory:// file through `c`.
async fn round_trip(c: &mut Client, path: &str) -> Result<(), tonic::Status> {
    let sid = open(c, path).await?;
    write_at(c, &sid, 0, b"over tls").await?;
    let (h, _) = close(c, &sid).await?;
    commit(c, &h, false).await.map(drop)
}

/// Whether a call through a channel that `connect` gave fails: at connect
/// (handshake refused) or at the first call.
async fn refused(client: Result<Client, tonic::transport::Error>, path: &str) -> bool {
    match client {
        Err(_) => true,
        Ok(mut c) => round_trip(&mut c, path).await.is_err(),
    }
}

#[tokio::test]
async fn tls_serves_and_plaintext_clients_are_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&pki.server_config(dir.path(), false)).await;
    let mut c = tls_client(server.addr, &pki.ca, None).await.unwrap();
    round_trip(&mut c, "memory://tls/a").await.unwrap();
    // Plaintext to a TLS port gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .map(StorageGatewayClient::new);
    assert!(refused(plain, "memory://tls/b").await);
    // A client that does not trust the server's CA refuses it.
    let other_ca = ca_other().pem();
    assert!(
        refused(
            tls_client(server.addr, &other_ca, None).await,
            "memory://tls/c"
        )
        .await
    );
    round_trip(&mut c, "memory://tls/d").await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&pki.server_config(dir.path(), true)).await;
    let mut good = tls_client(server.addr, &pki.ca, Some(&pki.client))
        .await
        .unwrap();
    round_trip(&mut good, "memory://mtls/a").await.unwrap();
    assert!(
        refused(
            tls_client(server.addr, &pki.ca, None).await,
            "memory://mtls/b"
        )
        .await,
        "a client without a certificate got in"
    );
    assert!(
        refused(
            tls_client(server.addr, &pki.ca, Some(&pki.rogue_client)).await,
            "memory://mtls/c"
        )
        .await,
        "a client with another CA's certificate got in"
    );
    // The refusals cost the server nothing.
    round_trip(&mut good, "memory://mtls/d").await.unwrap();
    let names = list_names(&mut good, "memory://mtls/").await.unwrap();
    assert_eq!(
        names,
        vec![("a".to_string(), false), ("d".to_string(), false)]
    );
}

/// The Rust client over mutual TLS to a gateway with principals: its
/// certificate and its token get it in, and only to its prefix.
#[tokio::test]
async fn the_rust_client_brings_its_certificate_and_token() {
    use sluice_client::{Client, ClientOptions};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}auth.principals.job.token-sha256: {}\nauth.principals.job.prefixes: memory://m/job/\n",
        pki.server_config(dir.path(), true),
        hex::encode(sluice::auth::token_hash("job-token"))
    );
    let server = TestServer::start(&yaml).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let endpoint = format!("https://{}", server.addr);
    let options = |token: Option<&str>| ClientOptions {
        bearer_token: token.map(String::from),
        tls: Some(tls.clone()),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&endpoint, options(Some("job-token")))
        .await
        .unwrap();
    let mut stream = client.open("memory://m/job/part-0").await.unwrap();
    stream.write(b"authenticated").await.unwrap();
    stream
        .close_for_commit()
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(
        client.read_all("memory://m/job/part-0").await.unwrap(),
        b"authenticated"
    );
    let outside = client.open("memory://m/other/part-0").await.err().unwrap();
    assert_eq!(outside.code(), Code::PermissionDenied);
    // Without the token the connect itself says why.
    let refused = Client::connect_with(&endpoint, options(None))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    let refused = Client::connect_with(&endpoint, options(Some("wrong")))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
}

#[tokio::test]
async fn a_bad_tls_file_stops_the_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let yaml = format!(
        "rpc.tls.cert-file: {0}\nrpc.tls.key-file: {0}\n",
        cert.display()
    );
    let config = sluice::config::Config::from_yaml(&yaml).unwrap();
    let err = sluice::server::Server::start(sluice::server::ServerOptions::new(
        dir.path().join("data"),
        config,
    ))
    .err()
    .expect("a start with a bad certificate fails");
    assert!(err.to_string().contains("rpc.tls"), "{err}");
    let missing = sluice::config::Config::from_yaml("rpc.tls.cert-file: /nonexistent/x.pem\n")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("rpc.tls.key-file"), "{missing}");
}

#[tokio::test]
async fn plaintext_on_a_public_address_needs_to_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let start = |yaml: &str| {
        let config = sluice::config::Config::from_yaml(yaml).unwrap();
        sluice::server::Server::start(sluice::server::ServerOptions::new(
            dir.path().join("data"),
            config,
        ))
        .unwrap()
    };
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = sluice::server::run(listener, start(""), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rpc.plaintext"), "{err}");
    assert!(err.contains("rpc.tls.cert-file"), "{err}");
}

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
