//! The module's load arguments, typed: every test starts from
//! [`ModuleArgs::new`] and changes only what it means to change.

use super::amqp::Sink;

/// Positional load arguments (see the README's "Load arguments").
#[derive(Debug, Clone)]
pub struct ModuleArgs {
    /// Event types, e.g. `$` or `xe`.
    pub types: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Broker user.
    pub user: String,
    /// Broker password.
    pub password: String,
    /// Heartbeat in seconds.
    pub heartbeat: u16,
    /// Exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// 1 or 2.
    pub delivery_mode: u8,
    /// Fallback list cap (text, to allow bad values in tests).
    pub fallback_size: String,
    /// Key masks.
    pub masks: Vec<String>,
}

impl ModuleArgs {
    /// String events (`$`), all keys, the sink's broker, exchange and
    /// routing key, 5 s heartbeats, non-persistent messages, a 10M cap.
    pub fn new(sink: &Sink) -> Self {
        Self {
            types: "$".into(),
            host: "127.0.0.1".into(),
            port: sink.port,
            user: "guest".into(),
            password: "guest".into(),
            heartbeat: 5,
            exchange: sink.exchange.clone(),
            routing_key: sink.routing_key.clone(),
            delivery_mode: 1,
            fallback_size: "10000000".into(),
            masks: vec!["ALL".into()],
        }
    }

    /// Event types.
    pub fn types(mut self, t: &str) -> Self {
        self.types = t.into();
        self
    }

    /// Broker port (a proxy's, or a closed one).
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }

    /// Broker password.
    pub fn password(mut self, p: &str) -> Self {
        self.password = p.into();
        self
    }

    /// Heartbeat in seconds.
    pub fn heartbeat(mut self, s: u16) -> Self {
        self.heartbeat = s;
        self
    }

    /// Delivery mode.
    pub fn delivery_mode(mut self, m: u8) -> Self {
        self.delivery_mode = m;
        self
    }

    /// Fallback list cap.
    pub fn fallback_size(mut self, n: &str) -> Self {
        self.fallback_size = n.into();
        self
    }

    /// Key masks (none: no key is forwarded).
    pub fn masks(mut self, m: &[&str]) -> Self {
        self.masks = m.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The argument list for `--loadmodule` or `MODULE LOAD`.
    pub fn build(&self) -> Vec<String> {
        let mut a = vec![
            self.types.clone(),
            self.host.clone(),
            self.port.to_string(),
            self.user.clone(),
            self.password.clone(),
            self.heartbeat.to_string(),
            self.exchange.clone(),
            self.routing_key.clone(),
            self.delivery_mode.to_string(),
            self.fallback_size.clone(),
        ];
        a.extend(self.masks.iter().cloned());
        a
    }
}
