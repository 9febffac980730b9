//! A static HTTPS server on the loopback for tests, with a self-signed
//! certificate that clients trust through `SSL_CERT_FILE`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// python3's http.server behind an `ssl.SSLContext` on 127.0.0.1, serving a
/// directory; killed when dropped. It prints the port the kernel chose.
pub struct HttpsServer {
    child: Child,
    pub port: u16,
}

const SERVER: &str = r#"
import http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl HttpsServer {
    /// Serve `www` with `tls/cert.pem` and `tls/key.pem` (see [`make_cert`]).
    pub fn start(www: &Path, tls: &Path) -> HttpsServer {
        let log = tls.join("server.log");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(www)
            .arg(tls.join("cert.pem"))
            .arg(tls.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the HTTPS server did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        HttpsServer { child, port }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed, non-CA certificate for localhost and 127.0.0.1 (rustls refuses a
/// CA certificate as the server's own, and openssl's `req -x509` makes one by default).
pub fn make_cert(tls: &Path) {
    std::fs::create_dir_all(tls).unwrap();
    let out = Command::new("openssl")
        .current_dir(tls)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "2",
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
