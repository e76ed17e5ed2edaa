//! The one error type of the crate.

/// Everything that can go wrong while parsing, applying, consuming or
/// comparing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not a JSON object: most likely the module's default
    /// `seed` format (`<db>\n<event>\n<key>`), which carries no value.
    #[error(
        "the message is not JSON (the seed format `<db>\\n<event>\\n<key>`?): \
         the consumer needs the module's `format json` with `values after` or `values both`"
    )]
    NotJson,
    /// The body starts like JSON but does not parse.
    #[error("the message is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is JSON but breaks the message contract.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A database number outside what the event allows.
    #[error("db {db} is out of range for event `{event}` (0..15{})", if event == "flushall" { ", or -1" } else { "" })]
    Db {
        /// The number in the message.
        db: i64,
        /// The event that carried it.
        event: String,
    },
    /// A Redis command failed (target or source).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker connection or channel failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// Bad command-line arguments.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An [`Error::Invalid`] with this text.
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::Invalid(what.into())
    }
}
