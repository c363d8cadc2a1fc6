//! Who may do what: TLS and mutual TLS with throw-away certificates,
//! bearer tokens mapped to principals, file:// confinement, and handle key
//! rotation, all through the real server over gRPC.

use std::path::Path;

use sluice::proto::storage_gateway_client::StorageGatewayClient;
use sluice::proto::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

use crate::harness::*;

mod auth;

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
