//! A minimal QMP client on QEMU's unix socket: enough for power-down,
//! status queries and key presses, without exposing anything on TCP.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP connection failed")]
    Io(#[from] std::io::Error),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP did not answer within {0:?}")]
    Timeout(Duration),
    #[error("QMP command `{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("QMP sent invalid JSON")]
    Json(#[from] serde_json::Error),
}

pub struct Qmp {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect { path: path.display().to_string(), source })?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp { lines: BufReader::new(read).lines(), writer };
        qmp.next_message().await?; // greeting
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn next_message(&mut self) -> Result<Value, QmpError> {
        let line = tokio::time::timeout(ANSWER_TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout(ANSWER_TIMEOUT))??
            .ok_or(QmpError::Closed)?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs a command and returns its `return` value, skipping events.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let message = self.next_message().await?;
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = message.get("error") {
                let text = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error").to_string();
                return Err(QmpError::Command { command: command.to_string(), message: text });
            }
        }
    }

    /// ACPI power button press.
    pub async fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(|_| ())
    }

    /// Presses (`down`) or releases keys (QKeyCode names), in the given order,
    /// as one batch of `input-send-event` key events. Unlike `send-key`, which
    /// queues the releases behind a hold-time timer in QEMU's bounded input
    /// queue (events past its limit are dropped), these reach the keyboard
    /// device at once, so the caller decides when each key goes up.
    pub async fn key_events(&mut self, keys: &[&str], down: bool) -> Result<(), QmpError> {
        if keys.is_empty() {
            return Ok(());
        }
        let events: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "type": "key", "data": { "down": down, "key": { "type": "qcode", "data": k } } }))
            .collect();
        self.execute("input-send-event", Some(json!({ "events": events }))).await.map(|_| ())
    }

    /// Sets a property of a QOM object, e.g. a device's `bootindex`.
    pub async fn qom_set(&mut self, path: &str, property: &str, value: Value) -> Result<(), QmpError> {
        self.execute("qom-set", Some(json!({ "path": path, "property": property, "value": value }))).await.map(|_| ())
    }
}
