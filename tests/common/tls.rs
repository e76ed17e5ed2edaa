//! A RabbitMQ node with a TLS listener, for the `amqps` tests: the harness
//! makes its own CA and server certificate with `openssl`, plus a second CA
//! that signed nothing (the wrong one).

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A private node listening for `amqp` and `amqps`; stopped on drop.
pub struct TlsBroker {
    /// Plain AMQP port (for the test's consumer).
    pub port: u16,
    /// TLS port.
    pub tls_port: u16,
    /// Where the certificates are.
    pub dir: PathBuf,
    name: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq")
}

impl TlsBroker {
    /// Makes the certificates and starts the node (a few seconds).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`TlsBroker::start`], but the TLS listener asks for a client
    /// certificate signed by the CA and offers SASL EXTERNAL (the user is
    /// the certificate's CN, `kea-client`: see [`TlsBroker::client_cert`]).
    pub fn start_mutual() -> Self {
        Self::start_with(true)
    }

    fn start_with(mutual: bool) -> Self {
        let name = super::unique("tls");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("cert dir");
        let ca = [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ];
        openssl(
            &dir,
            &[
                &ca[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-subj",
                    "/CN=kea-test-ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &ca[..],
                &[
                    "-keyout",
                    "other.key",
                    "-out",
                    "other-ca.pem",
                    "-subj",
                    "/CN=kea-other-ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext.cnf");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        if mutual {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "client.key",
                    "-out",
                    "client.csr",
                    "-subj",
                    "/CN=kea-client",
                ],
            );
            std::fs::write(
                dir.join("client-ext.cnf"),
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
            )
            .expect("client-ext.cnf");
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "client.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "client.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "client-ext.cnf",
                ],
            );
        }
        let (port, tls_port) = (free_port(), free_port());
        let out = Command::new(script())
            .args(["start", &name, &port.to_string()])
            .env("KEA_RABBITMQ_TLS", format!("{tls_port} {}", dir.display()))
            .env("KEA_RABBITMQ_TLS_PEER", if mutual { "yes" } else { "no" })
            .output()
            .expect("start rabbitmq");
        assert!(
            out.status.success(),
            "TLS broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            port,
            tls_port,
            dir,
            name,
        }
    }

    /// Runs `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> String {
        super::rabbitmqctl(&self.name, args)
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// The client certificate (CN `kea-client`, signed by the CA), PEM;
    /// made by [`TlsBroker::start_mutual`].
    pub fn client_cert(&self) -> String {
        self.dir.join("client.pem").display().to_string()
    }

    /// The client certificate's key, PEM.
    pub fn client_key(&self) -> String {
        self.dir.join("client.key").display().to_string()
    }

    /// A CA that signed nothing here.
    pub fn wrong_ca(&self) -> String {
        self.dir.join("other-ca.pem").display().to_string()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
