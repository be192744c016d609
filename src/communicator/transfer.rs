//! File transfer over SFTP, with a fallback to `cat`/`mkdir -p`/`chmod` over
//! exec when the server has no `sftp` subsystem.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::error::SshError;
use super::output::{OutputStream, shell_quote};
use super::ssh::{ChunkHandler, Ending, SshClient, drive};

const COPY_CHUNK: usize = 64 * 1024;
const STDERR_KEEP: usize = 4096;

/// What to upload.
#[derive(Debug, Clone, Copy)]
pub enum UploadSource<'a> {
    /// A local file, streamed (never read whole into memory).
    File(&'a Path),
    /// In-memory content.
    Bytes(&'a [u8]),
}

/// The transport chosen for one transfer operation.
enum Transport {
    Sftp(SftpSession),
    Exec,
}

impl Transport {
    async fn finish(self) {
        if let Transport::Sftp(sftp) = self {
            let _ = sftp.close().await;
        }
    }
}

impl SshClient {
    /// Always use the exec fallback (`cat`, `mkdir -p`, `chmod`) instead of SFTP.
    pub fn force_exec_transfer(&self, on: bool) {
        self.force_exec.store(on, Ordering::Relaxed);
    }

    /// True when transfers go over exec (forced, or no `sftp` subsystem).
    pub fn uses_exec_transfer(&self) -> bool {
        self.force_exec.load(Ordering::Relaxed) || self.sftp_missing.load(Ordering::Relaxed)
    }

    /// Writes `data` to `remote_path` (created or truncated; parent directories
    /// are not created). `mode` (e.g. `0o755`) is applied explicitly when given.
    pub async fn upload(&self, data: UploadSource<'_>, remote_path: &str, mode: Option<u32>) -> Result<(), SshError> {
        let transport = self.transport().await?;
        let result = self.put(&transport, data, remote_path, mode).await;
        transport.finish().await;
        result
    }

    /// Copies the contents of `local_dir` into `remote_dir` recursively and
    /// returns the number of files copied.
    ///
    /// `remote_dir` and missing parents are created (`mkdir -p`). Files and
    /// sub-directories keep their permission bits; `remote_dir` itself gets
    /// `local_dir`'s mode only if it had to be created. Symlinks and special
    /// files are skipped with a warning (never followed, so nothing outside
    /// `local_dir` is copied).
    pub async fn upload_dir(&self, local_dir: &Path, remote_dir: &str) -> Result<u64, SshError> {
        let transport = self.transport().await?;
        let result = self.put_dir(&transport, local_dir, remote_dir).await;
        transport.finish().await;
        result
    }

    /// Copies `remote_path` to `local_path` (created or truncated) and returns
    /// the number of bytes written. A partially written local file is removed
    /// on failure. Over SFTP a missing remote file fails before `local_path`
    /// is touched; over the exec fallback `local_path` is truncated first.
    pub async fn download(&self, remote_path: &str, local_path: &Path) -> Result<u64, SshError> {
        let transport = self.transport().await?;
        let result = self.get(&transport, remote_path, local_path).await;
        transport.finish().await;
        result
    }

    async fn transport(&self) -> Result<Transport, SshError> {
        if self.uses_exec_transfer() {
            return Ok(Transport::Exec);
        }
        match self.open_sftp().await? {
            Some(sftp) => Ok(Transport::Sftp(sftp)),
            None => {
                tracing::info!(addr = %self.addr(), "no sftp subsystem; transferring files over exec");
                self.sftp_missing.store(true, Ordering::Relaxed);
                Ok(Transport::Exec)
            }
        }
    }

    /// Starts the `sftp` subsystem; `None` when the server refuses it.
    async fn open_sftp(&self) -> Result<Option<SftpSession>, SshError> {
        let mut channel = self.open_channel("open session channel for sftp").await?;
        let requested = channel.request_subsystem(true, "sftp").await;
        if let Err(source) = requested {
            return Err(self.lost_or(SshError::Channel { what: "request sftp subsystem".to_owned(), source }));
        }
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    let _ = channel.close().await;
                    return Ok(None);
                }
                Some(_) => {}
                None => return Err(SshError::Disconnected),
            }
        }
        let sftp = SftpSession::new(channel.into_stream()).await;
        let sftp = sftp.map_err(|source| self.lost_or(sftp_err("start", "", source)))?;
        Ok(Some(sftp))
    }

    async fn put(
        &self,
        t: &Transport,
        data: UploadSource<'_>,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), SshError> {
        match data {
            UploadSource::File(path) => {
                let file = open_local(path).await?;
                self.put_reader(t, file, path, remote, mode).await
            }
            UploadSource::Bytes(bytes) => {
                let label = Path::new("<bytes>");
                self.put_reader(t, bytes, label, remote, mode).await
            }
        }
    }

    async fn put_reader<R: AsyncRead + Unpin + Send>(
        &self,
        t: &Transport,
        input: R,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), SshError> {
        match t {
            Transport::Sftp(sftp) => {
                let result = sftp_put(sftp, input, local, remote, mode).await;
                result.map_err(|e| self.lost_or(e))
            }
            Transport::Exec => {
                let q = shell_quote(remote);
                let mut cmd = format!("cat > {q}");
                if let Some(mode) = mode {
                    cmd.push_str(&format!(" && chmod {} {q}", mode_text(mode)));
                }
                let mut sink = TransferSink::discard();
                self.run_transfer(&cmd, Some(input), local, &mut sink, "upload", remote).await
            }
        }
    }

    async fn get(&self, t: &Transport, remote: &str, local: &Path) -> Result<u64, SshError> {
        match t {
            Transport::Sftp(sftp) => {
                let result = sftp_get(sftp, remote, local).await;
                result.map_err(|e| self.lost_or(e))
            }
            Transport::Exec => {
                let file = create_local(local).await?;
                let result = self.exec_get(remote, file, local).await;
                remove_if_failed(result, local).await
            }
        }
    }

    async fn exec_get(&self, remote: &str, file: tokio::fs::File, local: &Path) -> Result<u64, SshError> {
        let cmd = format!("cat -- {}", shell_quote(remote));
        let mut sink = TransferSink::to_file(file, local);
        let none: Option<&[u8]> = None;
        self.run_transfer(&cmd, none, local, &mut sink, "download", remote).await?;
        sink.flush().await?;
        Ok(sink.written)
    }

    async fn put_dir(&self, t: &Transport, local: &Path, remote: &str) -> Result<u64, SshError> {
        let root_meta = local_metadata(local).await?;
        if !root_meta.is_dir() {
            return Err(SshError::Unsupported { path: local.to_path_buf(), reason: "not a directory" });
        }
        let existed = self.is_remote_dir(t, remote).await?;
        self.mkdir_p(t, remote).await?;
        // Directory modes are applied last, so read-only directories can be filled first.
        let mut dir_modes: Vec<(String, u32)> = Vec::new();
        if !existed {
            dir_modes.push((remote.to_owned(), permission_bits(&root_meta)));
        }
        let mut pending = vec![(local.to_path_buf(), remote.to_owned())];
        let mut files = 0u64;
        while let Some((dir, rdir)) = pending.pop() {
            for (path, meta) in read_local_dir(&dir).await? {
                let rpath = remote_join(&rdir, file_name(&path)?);
                if meta.is_dir() {
                    self.mkdir_p(t, &rpath).await?;
                    dir_modes.push((rpath.clone(), permission_bits(&meta)));
                    pending.push((path, rpath));
                } else if meta.is_file() {
                    let mode = Some(permission_bits(&meta));
                    self.put(t, UploadSource::File(&path), &rpath, mode).await?;
                    files += 1;
                } else {
                    tracing::warn!(path = %path.display(), "skipping symlink or special file in upload_dir");
                }
            }
        }
        for (rpath, mode) in dir_modes.iter().rev() {
            self.chmod(t, rpath, *mode).await?;
        }
        Ok(files)
    }

    async fn is_remote_dir(&self, t: &Transport, remote: &str) -> Result<bool, SshError> {
        match t {
            Transport::Sftp(sftp) => Ok(sftp.metadata(remote).await.is_ok_and(|m| m.is_dir())),
            Transport::Exec => {
                let cmd = format!("test -d {}", shell_quote(remote));
                let mut sink = TransferSink::discard();
                let none: Option<&[u8]> = None;
                let local = Path::new("<none>");
                let ending = self.run_command(&cmd, none, local, &mut sink).await?;
                Ok(ending.exit_status == Some(0))
            }
        }
    }

    async fn mkdir_p(&self, t: &Transport, remote: &str) -> Result<(), SshError> {
        match t {
            Transport::Sftp(sftp) => sftp_mkdir_p(sftp, remote).await.map_err(|e| self.lost_or(e)),
            Transport::Exec => {
                let cmd = format!("mkdir -p -- {}", shell_quote(remote));
                self.simple_transfer_cmd(&cmd, "mkdir", remote).await
            }
        }
    }

    async fn chmod(&self, t: &Transport, remote: &str, mode: u32) -> Result<(), SshError> {
        match t {
            Transport::Sftp(sftp) => {
                let attrs = permissions_attrs(mode);
                let result = sftp.set_metadata(remote, attrs).await;
                result.map_err(|e| self.lost_or(sftp_err("chmod", remote, e)))
            }
            Transport::Exec => {
                let cmd = format!("chmod {} -- {}", mode_text(mode), shell_quote(remote));
                self.simple_transfer_cmd(&cmd, "chmod", remote).await
            }
        }
    }

    async fn simple_transfer_cmd(&self, cmd: &str, op: &'static str, remote: &str) -> Result<(), SshError> {
        let mut sink = TransferSink::discard();
        let none: Option<&[u8]> = None;
        let local = Path::new("<none>");
        self.run_transfer(cmd, none, local, &mut sink, op, remote).await
    }

    /// Runs a transfer command and turns a non-zero exit into [`SshError::RemoteTransfer`].
    async fn run_transfer<R: AsyncRead + Unpin + Send>(
        &self,
        cmd: &str,
        stdin: Option<R>,
        local: &Path,
        sink: &mut TransferSink,
        op: &'static str,
        remote: &str,
    ) -> Result<(), SshError> {
        let ending = self.run_command(cmd, stdin, local, sink).await?;
        if ending.exit_status == Some(0) {
            return Ok(());
        }
        Err(SshError::RemoteTransfer {
            op,
            path: remote.to_owned(),
            status: ending.display(),
            stderr: sink.stderr_text(),
        })
    }

    async fn run_command<R: AsyncRead + Unpin + Send>(
        &self,
        cmd: &str,
        stdin: Option<R>,
        local: &Path,
        sink: &mut TransferSink,
    ) -> Result<Ending, SshError> {
        let (mut read, write) = self.start_command(cmd).await?;
        let ending = drive(&mut read, &write, stdin, sink, local).await;
        self.check_disconnect(ending)
    }
}

/// Collects stderr (bounded) and optionally writes stdout to a local file.
struct TransferSink {
    out: Option<(BufWriter<tokio::fs::File>, PathBuf)>,
    written: u64,
    stderr: Vec<u8>,
}

impl TransferSink {
    fn discard() -> Self {
        Self { out: None, written: 0, stderr: Vec::new() }
    }

    fn to_file(file: tokio::fs::File, path: &Path) -> Self {
        Self { out: Some((BufWriter::new(file), path.to_path_buf())), written: 0, stderr: Vec::new() }
    }

    async fn flush(&mut self) -> Result<(), SshError> {
        if let Some((file, path)) = self.out.as_mut() {
            file.flush().await.map_err(|source| SshError::Io { path: path.clone(), source })?;
        }
        Ok(())
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }

    async fn write_stdout(&mut self, data: &[u8]) -> Result<(), SshError> {
        let Some((file, path)) = self.out.as_mut() else {
            return Ok(());
        };
        file.write_all(data).await.map_err(|source| SshError::Io { path: path.clone(), source })?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        self.stderr.extend_from_slice(data);
        if self.stderr.len() > STDERR_KEEP {
            let cut = self.stderr.len() - STDERR_KEEP;
            self.stderr.drain(..cut);
        }
    }
}

impl ChunkHandler for TransferSink {
    async fn chunk(&mut self, stream: OutputStream, data: &[u8]) -> Result<(), SshError> {
        match stream {
            OutputStream::Stdout => self.write_stdout(data).await,
            OutputStream::Stderr => {
                self.keep_stderr(data);
                Ok(())
            }
        }
    }
}

async fn sftp_put<R: AsyncRead + Unpin>(
    sftp: &SftpSession,
    mut input: R,
    local: &Path,
    remote: &str,
    mode: Option<u32>,
) -> Result<(), SshError> {
    let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
    let file = sftp.open_with_flags(remote, flags).await;
    let mut file = file.map_err(|e| sftp_err("open", remote, e))?;
    copy_stream(&mut input, &mut file, Direction::Upload, local, remote).await?;
    if let Some(mode) = mode {
        let result = file.set_metadata(permissions_attrs(mode)).await;
        result.map_err(|e| sftp_err("chmod", remote, e))?;
    }
    let closed = file.shutdown().await;
    closed.map_err(|e| sftp_err("write", remote, SftpError::from(e)))
}

async fn sftp_get(sftp: &SftpSession, remote: &str, local: &Path) -> Result<u64, SshError> {
    let file = sftp.open(remote).await;
    let mut file = file.map_err(|e| sftp_err("open", remote, e))?;
    let mut out = BufWriter::new(create_local(local).await?);
    let copied = copy_stream(&mut file, &mut out, Direction::Download, local, remote).await;
    let _ = file.shutdown().await;
    let result = match copied {
        Ok(n) => out.flush().await.map(|()| n).map_err(|source| SshError::Io { path: local.to_path_buf(), source }),
        Err(e) => Err(e),
    };
    remove_if_failed(result, local).await
}

/// Removes a partially written local file when the download failed.
async fn remove_if_failed(result: Result<u64, SshError>, local: &Path) -> Result<u64, SshError> {
    if result.is_err() {
        let _ = tokio::fs::remove_file(local).await;
    }
    result
}

/// Which way [`copy_stream`] moves data; decides which side an I/O error is blamed on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

/// Copies from `input` to `output` in chunks, returning the byte count.
async fn copy_stream<R, W>(
    input: &mut R,
    output: &mut W,
    direction: Direction,
    local: &Path,
    remote: &str,
) -> Result<u64, SshError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let uploading = direction == Direction::Upload;
    let local_err = |source| SshError::Io { path: local.to_path_buf(), source };
    let remote_err = |op, e: std::io::Error| sftp_err(op, remote, SftpError::from(e));
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if uploading => return Err(local_err(e)),
            Err(e) => return Err(remote_err("read", e)),
        };
        if n == 0 {
            return Ok(total);
        }
        let chunk = buf.get(..n).unwrap_or_default();
        match output.write_all(chunk).await {
            Ok(()) => total += n as u64,
            Err(e) if uploading => return Err(remote_err("write", e)),
            Err(e) => return Err(local_err(e)),
        }
    }
}

async fn sftp_mkdir_p(sftp: &SftpSession, remote: &str) -> Result<(), SshError> {
    let mut prefix = String::new();
    if remote.starts_with('/') {
        prefix.push('/');
    }
    for part in remote.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(part);
        if sftp.metadata(prefix.as_str()).await.is_ok_and(|m| m.is_dir()) {
            continue;
        }
        if let Err(e) = sftp.create_dir(prefix.as_str()).await {
            // Lost a race, or the path exists as a non-directory (then report it).
            if !sftp.metadata(prefix.as_str()).await.is_ok_and(|m| m.is_dir()) {
                return Err(sftp_err("mkdir", &prefix, e));
            }
        }
    }
    Ok(())
}

fn sftp_err(op: &'static str, path: &str, source: SftpError) -> SshError {
    SshError::Sftp { op, path: path.to_owned(), source }
}

fn permissions_attrs(mode: u32) -> FileAttributes {
    let mut attrs = FileAttributes::empty();
    attrs.permissions = Some(mode & 0o7777);
    attrs
}

fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

#[cfg(unix)]
fn permission_bits(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn permission_bits(meta: &std::fs::Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

/// Joins a remote directory and a file name with exactly one `/`.
pub(crate) fn remote_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_owned();
    }
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

fn file_name(path: &Path) -> Result<&str, SshError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SshError::Unsupported { path: path.to_path_buf(), reason: "file name is not valid UTF-8" })
}

async fn open_local(path: &Path) -> Result<tokio::fs::File, SshError> {
    tokio::fs::File::open(path).await.map_err(|source| SshError::Io { path: path.to_path_buf(), source })
}

async fn create_local(path: &Path) -> Result<tokio::fs::File, SshError> {
    tokio::fs::File::create(path).await.map_err(|source| SshError::Io { path: path.to_path_buf(), source })
}

async fn local_metadata(path: &Path) -> Result<std::fs::Metadata, SshError> {
    tokio::fs::symlink_metadata(path).await.map_err(|source| SshError::Io { path: path.to_path_buf(), source })
}

/// Entries of a local directory (not following symlinks), sorted by name.
async fn read_local_dir(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, SshError> {
    let io_err = |source| SshError::Io { path: dir.to_path_buf(), source };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io_err)?;
    let mut out = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
        let path = entry.path();
        let meta = local_metadata(&path).await?;
        out.push((path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_remote_paths() {
        assert_eq!(remote_join("/a/", "b"), "/a/b");
        assert_eq!(remote_join("/", "b"), "/b");
        assert_eq!(remote_join("a", "b"), "a/b");
        assert_eq!(remote_join("", "b"), "b");
    }

    #[test]
    fn formats_modes() {
        assert_eq!(mode_text(0o755), "0755");
        assert_eq!(mode_text(0o104_755), "4755");
    }
}
