//! Subprocess environments: the protocol as JSON lines on standard input/output.
//!
//! One line is one message: the OpenEnv message plus an `id` naming the session
//! ([`Framed`]). The process answers every `reset`, `step`, `state`, `health` and `metadata` with
//! exactly one line carrying the same `id`, in any order across sessions; `close` gets no answer.
//! The first session of an id is opened by its first message. Standard error is free for the
//! process's own logging; its last lines are quoted when the process dies.
//!
//! All [`super::RemoteEnv`]s built from one command line share its processes (`processes`
//! settings, round-robin). A process that exits, prints a line that is not a protocol message,
//! prints a line longer than `max_message_bytes`, or leaves a call unanswered past the timeout is
//! killed; every call waiting on it fails with the reason, and the next `reset` starts a new one.

use super::protocol::{ClientMessage, EnvMetadata, Framed, ServerMessage};
use super::ws::preview;
use super::{CommandLine, RemoteSpec};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// How many lines of the process's standard error are kept for error messages.
const STDERR_LINES: usize = 20;

type Reply = Result<ServerMessage, String>;

/// What the tasks around one process share.
#[derive(Default)]
struct Shared {
    /// Calls waiting for their reply, by session id.
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// Why the process is unusable, once it is.
    failure: Mutex<Option<String>>,
    /// The last lines of standard error.
    stderr: Mutex<VecDeque<String>>,
}

impl Shared {
    /// Mark the process failed (first reason wins) and fail every waiting call.
    fn fail(&self, reason: String) {
        let reason = {
            let mut failure = lock(&self.failure);
            failure.get_or_insert(reason).clone()
        };
        let waiting: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in waiting {
            let _ = tx.send(Err(reason.clone()));
        }
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn stderr_tail(&self) -> String {
        let lines = lock(&self.stderr);
        if lines.is_empty() {
            return String::new();
        }
        let joined: Vec<&str> = lines.iter().map(String::as_str).collect();
        format!("; its last standard-error lines:\n{}", joined.join("\n"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One running subprocess serving many sessions.
pub struct Process {
    label: String,
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<String>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    next_session: AtomicU64,
    max_message_bytes: usize,
}

impl Process {
    /// Start `command` and wait for its answer to a health probe.
    async fn start(command: &CommandLine, settings: &Settings) -> Result<Arc<Self>, String> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", command.program))?;
        let pid = child.id().unwrap_or(0);
        let label = format!("{} (pid {pid})", super::Endpoint::Command(command.clone()));
        let shared = Arc::new(Shared::default());
        let (outbox, inbox) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let max = settings.max_message_bytes;
        tokio::spawn(write_lines(stdin, inbox, shared.clone()));
        tokio::spawn(read_replies(stdout, max, shared.clone()));
        let stderr_task = tokio::spawn(read_stderr(stderr, label.clone(), shared.clone()));
        tokio::spawn(watch(child, kill_rx, stderr_task, shared.clone()));
        let process = Arc::new(Process {
            label,
            shared,
            outbox,
            kill: Mutex::new(Some(kill_tx)),
            next_session: AtomicU64::new(1),
            max_message_bytes: max,
        });
        let probe = process.request("health", &ClientMessage::Health);
        match tokio::time::timeout(settings.connect_timeout, probe).await {
            Ok(Ok(ServerMessage::Health { .. })) => Ok(process),
            Ok(Ok(other)) => {
                let e = format!("answered `{}` to the health probe", other.kind());
                Err(process.kill_with(format!("{}: {e}", process.label)))
            }
            Ok(Err(e)) => Err(process.kill_with(format!("{}: {e}", process.label))),
            Err(_) => Err(process.kill_with(format!(
                "{}: no answer to the health probe within {:?} (connect_timeout_s)",
                process.label, settings.connect_timeout
            ))),
        }
    }

    /// Kill the process, failing every waiting call with `reason`; returns the reason recorded.
    fn kill_with(&self, reason: String) -> String {
        self.shared.fail(reason);
        if let Some(kill) = lock(&self.kill).take() {
            let _ = kill.send(());
        }
        self.shared.failure().unwrap_or_default()
    }

    fn is_alive(&self) -> bool {
        self.shared.failure().is_none()
    }

    fn new_session(&self) -> String {
        format!("s{}", self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Send `message` for session `id` and wait for the reply with that id.
    async fn request(&self, id: &str, message: &ClientMessage) -> Reply {
        let line = self.frame(id, message)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if let Some(reason) = self.shared.failure() {
                return Err(reason);
            }
            if pending.insert(id.to_string(), tx).is_some() {
                return Err(format!("session {id} already has a call in flight"));
            }
        }
        if self.outbox.send(line).is_err() {
            lock(&self.shared.pending).remove(id);
            return Err(self
                .shared
                .failure()
                .unwrap_or_else(|| "the process is gone".into()));
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(self
                .shared
                .failure()
                .unwrap_or_else(|| "the process is gone".into())),
        }
    }

    /// Send a message that gets no answer (`close`).
    fn notify(&self, id: &str, message: &ClientMessage) {
        if let Ok(line) = self.frame(id, message) {
            let _ = self.outbox.send(line);
        }
    }

    fn frame(&self, id: &str, message: &ClientMessage) -> Result<String, String> {
        let framed = Framed {
            id: Some(id.to_string()),
            message: message.clone(),
        };
        let mut line = serde_json::to_string(&framed).map_err(|e| e.to_string())?;
        if line.len() > self.max_message_bytes {
            return Err(format!(
                "the {} message is {} bytes, over max_message_bytes = {}",
                message.kind(),
                line.len(),
                self.max_message_bytes
            ));
        }
        line.push('\n');
        Ok(line)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(kill) = lock(&self.kill).take() {
            let _ = kill.send(());
        }
    }
}

async fn write_lines(
    mut stdin: ChildStdin,
    mut inbox: mpsc::UnboundedReceiver<String>,
    shared: Arc<Shared>,
) {
    while let Some(line) = inbox.recv().await {
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(e) = written.await {
            // Usually the process has just exited; let `watch` report how, if it can.
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.fail(format!("writing to its standard input failed: {e}"));
            return;
        }
    }
}

async fn read_replies(stdout: tokio::process::ChildStdout, max: usize, shared: Arc<Shared>) {
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(max));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                return shared.fail(format!(
                    "printed a line longer than max_message_bytes = {max}"
                ));
            }
            Err(LinesCodecError::Io(e)) => {
                return shared.fail(format!("reading its standard output failed: {e}"));
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Err(reason) = route(&line, &shared) {
            return shared.fail(reason);
        }
    }
    // End of output: normally the process exited, and `watch` reports how; give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.fail("closed its standard output".into());
}

/// Hand one reply line to the call waiting for it.
fn route(line: &str, shared: &Shared) -> Result<(), String> {
    let framed: Framed<ServerMessage> = serde_json::from_str(line).map_err(|e| {
        format!(
            "printed a line that is not a protocol message ({e}): {}",
            preview(line)
        )
    })?;
    let Some(id) = framed.id else {
        return Err(match framed.message {
            ServerMessage::Error { data } => format!(
                "could not read a message and answered error {} without an id: {}",
                data.code, data.message
            ),
            other => format!("sent a `{}` message without an id", other.kind()),
        });
    };
    let waiting = lock(&shared.pending).remove(&id);
    match waiting {
        Some(tx) => {
            let _ = tx.send(Ok(framed.message));
        }
        None => tracing::warn!(
            "subprocess environment answered session {id:?}, which waits for nothing"
        ),
    }
    Ok(())
}

async fn read_stderr(stderr: tokio::process::ChildStderr, label: String, shared: Arc<Shared>) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(4096));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => "[a very long line]".into(),
            Err(LinesCodecError::Io(_)) => return,
        };
        tracing::debug!("{label} stderr: {line}");
        let mut tail = lock(&shared.stderr);
        if tail.len() == STDERR_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Own the child: report its exit, or kill it when asked (or when the [`Process`] is dropped).
async fn watch(
    mut child: Child,
    kill: oneshot::Receiver<()>,
    stderr_task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
) {
    tokio::select! {
        status = child.wait() => {
            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_task).await;
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("an unknown status ({e})"),
            };
            shared.fail(format!("exited with {status}{}", shared.stderr_tail()));
        }
        _ = kill => {
            let _ = child.kill().await;
        }
    }
}

/// Process settings taken from the spec.
#[derive(Clone)]
struct Settings {
    connect_timeout: Duration,
    max_message_bytes: usize,
}

/// The processes of one command line, shared by all its sessions.
pub struct ProcessGroup {
    command: CommandLine,
    settings: Settings,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Process>>>>,
    next_slot: AtomicUsize,
}

impl ProcessGroup {
    /// The group for `spec`'s command line, shared with every other live instance of the same
    /// command and settings.
    fn shared(command: &CommandLine, spec: &RemoteSpec) -> Arc<Self> {
        type Key = (CommandLine, usize, usize, u64);
        static GROUPS: Mutex<Option<HashMap<Key, Weak<ProcessGroup>>>> = Mutex::new(None);
        let key = (
            command.clone(),
            spec.processes,
            spec.max_message_bytes,
            spec.connect_timeout_s.to_bits(),
        );
        let mut groups = lock(&GROUPS);
        let groups = groups.get_or_insert_with(HashMap::new);
        groups.retain(|_, group| group.strong_count() > 0);
        if let Some(group) = groups.get(&key).and_then(Weak::upgrade) {
            return group;
        }
        let group = Arc::new(ProcessGroup {
            command: command.clone(),
            settings: Settings {
                connect_timeout: spec.connect_timeout(),
                max_message_bytes: spec.max_message_bytes,
            },
            slots: (0..spec.processes).map(|_| Default::default()).collect(),
            next_slot: AtomicUsize::new(0),
        });
        groups.insert(key, Arc::downgrade(&group));
        group
    }

    /// The live process in `slot`, starting one if there is none.
    async fn process(&self, slot: usize) -> Result<Arc<Process>, String> {
        let mut current = self.slots[slot].lock().await;
        if let Some(process) = current.as_ref().filter(|p| p.is_alive()) {
            return Ok(process.clone());
        }
        *current = None;
        let process = Process::start(&self.command, &self.settings).await?;
        *current = Some(process.clone());
        Ok(process)
    }
}

/// The client side of one session on a subprocess.
pub struct StdioLink {
    group: Arc<ProcessGroup>,
    slot: usize,
    process: Option<Arc<Process>>,
    session: Option<String>,
}

impl StdioLink {
    /// Attach to the command's process group, starting (and health-checking) its process.
    pub async fn connect(command: &CommandLine, spec: &RemoteSpec) -> Result<Self, String> {
        let group = ProcessGroup::shared(command, spec);
        let slot = group.next_slot.fetch_add(1, Ordering::Relaxed) % group.slots.len();
        let process = group.process(slot).await?;
        Ok(StdioLink {
            group,
            slot,
            process: Some(process),
            session: None,
        })
    }

    /// The process's name and description, when it answers `metadata`.
    pub async fn metadata(&mut self) -> Option<EnvMetadata> {
        let process = self.process.clone()?;
        let id = format!("metadata-{}", process.new_session());
        let ask = process.request(&id, &ClientMessage::Metadata);
        match tokio::time::timeout(self.group.settings.connect_timeout, ask).await {
            Ok(Ok(ServerMessage::Metadata { data })) => Some(*data),
            _ => None,
        }
    }

    /// Who this session is, for error messages.
    pub fn label(&self) -> String {
        let process = match &self.process {
            Some(p) => p.label.clone(),
            None => super::Endpoint::Command(self.group.command.clone()).to_string(),
        };
        match &self.session {
            Some(s) => format!("{process} session {s}"),
            None => process,
        }
    }

    /// Send `message` on this session and wait for the reply (the caller bounds the wait).
    pub async fn call(&mut self, message: &ClientMessage) -> Result<ServerMessage, String> {
        if let Some(reason) = self.process.as_ref().and_then(|p| p.shared.failure()) {
            // The session died with its process: only a new episode may move to a new process.
            if !matches!(message, ClientMessage::Reset { .. }) {
                return Err(reason);
            }
            self.process = None;
        }
        if self.process.is_none() {
            self.session = None;
            self.process = Some(self.group.process(self.slot).await?);
        }
        let process = self.process.clone().expect("process was just set");
        let session = self
            .session
            .get_or_insert_with(|| process.new_session())
            .clone();
        process.request(&session, message).await
    }

    /// After a fault: kill the process (a process that stopped answering one session cannot be
    /// trusted with the others), so the next call starts a new one.
    pub fn abandon(&mut self, reason: &str) {
        if let Some(process) = self.process.take() {
            process.kill_with(reason.to_string());
        }
        self.session = None;
    }

    /// The process ended this session; the next call opens a new one.
    pub fn forget_session(&mut self) {
        self.session = None;
    }

    /// Tell the process this session is over.
    pub fn close(&mut self) {
        if let (Some(process), Some(session)) = (&self.process, self.session.take()) {
            process.notify(&session, &ClientMessage::Close);
        }
    }
}
