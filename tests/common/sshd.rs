//! A private sshd on a loopback port for tests of the ssh:// cache transport: as the
//! current user, host and client keys made for the test, the built-in SFTP server.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "buildit-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// An sshd of our own on a loopback port, as the current user, that lets in
/// the current user with a key made for it.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    /// A running sshd, or `None` after `skip` says why (a failure under CI).
    pub fn start() -> Option<Sshd> {
        // By absolute path (sshd re-executes itself), which `tool` gives.
        let sshd = super::skip::require_tool("sshd", "scripts/test.sh installs openssh-server")?;
        let root = nix::unistd::geteuid().is_root();
        if root && !Path::new("/run/sshd").is_dir() {
            // Its privilege separation directory, which the service's unit
            // would make; sshd refuses to start as root without it.
            fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        fs::create_dir(d.join("cache")).unwrap();
        let log = d.join("sshd.log");
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let cfg = d.join(format!("sshd_config-{attempt}"));
            fs::write(
                &cfg,
                format!(
                    "Port {port}\n\
                     ListenAddress 127.0.0.1\n\
                     HostKey {d}/host_key\n\
                     PidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     Subsystem sftp internal-sftp\n\
                     LogLevel VERBOSE\n",
                    d = d.display()
                ),
            )
            .unwrap();
            let out = fs::File::create(&log).unwrap();
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Server listening on") {
                    let host_pub = fs::read_to_string(d.join("host_key.pub")).unwrap();
                    let mut kh = fs::File::create(d.join("known_hosts")).unwrap();
                    writeln!(kh, "[127.0.0.1]:{port} {}", host_pub.trim()).unwrap();
                    return Some(Sshd {
                        child,
                        dir,
                        port,
                        log,
                    });
                }
                let exited = child.try_wait().unwrap().is_some();
                if exited || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    if text.contains("Address already in use") {
                        break;
                    }
                    panic!("sshd did not start:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sshd: no free port after 5 attempts");
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn url(&self) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .expect("current user in passwd")
            .name;
        let d = self.dir.path().display();
        format!(
            "ssh://{user}@127.0.0.1:{}{}?identity={d}/client_key&known-hosts={d}/known_hosts",
            self.port,
            self.cache_dir().display(),
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
