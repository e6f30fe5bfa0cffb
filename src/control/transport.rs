//! The platform half of the control channel: a Unix socket on Unix, a named pipe on Windows.

use std::{io, path::Path};

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(windows)]
#[path = "winuser.rs"]
mod winuser;

/// A connected control stream.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

#[cfg(unix)]
mod imp {
    use std::{
        io,
        path::{Path, PathBuf},
    };

    use tokio::net::{UnixListener, UnixStream};

    /// The daemon's end of the control channel. Removes its socket file when dropped.
    pub struct Listener {
        inner: UnixListener,
        path: PathBuf,
    }

    impl Listener {
        /// Binds the socket at `path` (mode 0600). A stale socket left by a crashed daemon is
        /// replaced; a live one is an `AddrInUse` error.
        pub async fn bind(path: &Path) -> io::Result<Self> {
            use std::os::unix::fs::PermissionsExt;
            if path.exists() {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another iwant node is already running with this home",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            let inner = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(Self {
                inner,
                path: path.to_path_buf(),
            })
        }

        /// Waits for the next client. Returns the stream and whether the client runs as the
        /// same user as this process.
        pub async fn accept(&self) -> io::Result<(UnixStream, bool)> {
            let (stream, _) = self.inner.accept().await?;
            let same_user = stream.peer_cred()?.uid() == unsafe_geteuid();
            Ok((stream, same_user))
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn unsafe_geteuid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Connects to the daemon listening at `path`.
    pub async fn connect(path: &Path) -> io::Result<UnixStream> {
        UnixStream::connect(path).await
    }
}

#[cfg(windows)]
mod imp {
    use std::{io, path::Path, sync::Mutex};

    use tokio::net::windows::named_pipe::{
        ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
    };

    use super::winuser::{check_server_is_us, PipeSecurity};

    /// Windows' "all pipe instances are busy".
    const ERROR_PIPE_BUSY: i32 = 231;

    /// The pipe name for a home: `\\.\pipe\iwant-<FNV-1a of the home path>`.
    pub(super) fn pipe_name(path: &Path) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in path.to_string_lossy().to_lowercase().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!(r"\\.\pipe\iwant-{hash:016x}")
    }

    /// The daemon's end of the control channel: a local-only named pipe that only this
    /// user (and SYSTEM) may open ([`super::winuser`]).
    pub struct Listener {
        name: String,
        security: PipeSecurity,
        next: Mutex<Option<NamedPipeServer>>,
    }

    impl Listener {
        /// Creates the first pipe instance; fails if a live daemon (or anyone else) already
        /// owns the name.
        pub async fn bind(path: &Path) -> io::Result<Self> {
            let name = pipe_name(path);
            let security = PipeSecurity::only_this_user()?;
            let first = create(&name, &security, true).map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another iwant node is already running with this home (or another \
                             program holds its control pipe {name})"
                        ),
                    )
                } else {
                    e
                }
            })?;
            Ok(Self {
                name,
                security,
                next: Mutex::new(Some(first)),
            })
        }

        /// Waits for the next client. The pipe's DACL already keeps other users out.
        pub async fn accept(&self) -> io::Result<(NamedPipeServer, bool)> {
            let server = match self.next.lock().expect("bug: poisoned").take() {
                Some(s) => s,
                None => create(&self.name, &self.security, false)?,
            };
            server.connect().await?;
            let replacement = create(&self.name, &self.security, false)?;
            *self.next.lock().expect("bug: poisoned") = Some(replacement);
            Ok((server, true))
        }
    }

    /// One instance of the pipe `name`, local clients only, with the DACL of `security`.
    fn create(name: &str, security: &PipeSecurity, first: bool) -> io::Result<NamedPipeServer> {
        // SAFETY: `security` points to valid SECURITY_ATTRIBUTES that outlive the call.
        unsafe {
            ServerOptions::new()
                .first_pipe_instance(first)
                .reject_remote_clients(true)
                .create_with_security_attributes_raw(name, security.as_ptr())
        }
    }

    /// Connects to the daemon's pipe for the home whose socket path is `path`, and checks that
    /// the process serving it runs as this user.
    pub async fn connect(path: &Path) -> io::Result<NamedPipeClient> {
        let name = pipe_name(path);
        for _ in 0..50 {
            match ClientOptions::new().open(&name) {
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => return Err(e),
                Ok(client) => {
                    check_server_is_us(&client)?;
                    return Ok(client);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the node's control pipe stayed busy",
        ))
    }
}

pub use imp::Listener;

/// The client's end of a control connection.
#[cfg(unix)]
pub(crate) type Stream = tokio::net::UnixStream;
/// The client's end of a control connection.
#[cfg(windows)]
pub(crate) type Stream = tokio::net::windows::named_pipe::NamedPipeClient;

/// How the control channel of the home whose socket path is `path` is named to the user: the
/// socket's path on Unix, the pipe's name on Windows.
pub(crate) fn channel_name(path: &Path) -> String {
    #[cfg(unix)]
    return path.display().to_string();
    #[cfg(windows)]
    return imp::pipe_name(path);
}

/// Connects to the control channel of the home whose socket path is `path`.
pub(crate) async fn connect(path: &Path) -> io::Result<Stream> {
    imp::connect(path).await
}
