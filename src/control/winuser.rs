//! Windows users and the control pipe: the pipe admits only the user who runs the node, and
//! the CLI talks only to a pipe whose server runs as the same user as itself.
//!
//! Named pipe names are global: any user on the machine can create `\\.\pipe\iwant-…` first
//! and wait for our CLI. The default security descriptor of a pipe also lets every user read
//! from it. So the node creates its pipe with a protected DACL that grants access to its own
//! user and to SYSTEM only, and the client asks Windows which process serves the pipe it
//! opened and refuses it unless that process runs as the client's user.

use std::{ffi::c_void, io, os::windows::io::AsRawHandle};

use windows_sys::Win32::{
    Foundation::{CloseHandle, LocalFree, HANDLE},
    Security::{
        Authorization::{
            ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
            SDDL_REVISION_1,
        },
        EqualSid, GetTokenInformation, TokenUser, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    },
    System::{
        Pipes::GetNamedPipeServerProcessId,
        Threading::{
            GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
        },
    },
};

/// A handle closed on drop.
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by us and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// The `TOKEN_USER` of a process: the user it runs as. The buffer is 8-byte aligned because
/// `TOKEN_USER` starts with a pointer to the SID that follows it in the same buffer.
struct UserOf(Vec<u64>);

impl UserOf {
    /// The user the process `process` runs as.
    fn process(process: HANDLE) -> io::Result<Self> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `process` is a valid process handle with query rights; `token` receives a
        // handle we own.
        if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = Owned(token);
        let mut len = 0u32;
        // SAFETY: a size query: no buffer, `len` receives the size needed.
        unsafe { GetTokenInformation(token.0, TokenUser, std::ptr::null_mut(), 0, &mut len) };
        if len == 0 || len > 64 * 1024 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buf` holds at least `len` bytes, suitably aligned for TOKEN_USER.
        if unsafe {
            GetTokenInformation(
                token.0,
                TokenUser,
                buf.as_mut_ptr().cast::<c_void>(),
                len,
                &mut len,
            )
        } == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(buf))
    }

    /// The user this process runs as.
    fn current() -> io::Result<Self> {
        // SAFETY: the pseudo handle of the current process needs no closing.
        Self::process(unsafe { GetCurrentProcess() })
    }

    fn sid(&self) -> *mut c_void {
        // SAFETY: the buffer was filled by GetTokenInformation(TokenUser).
        unsafe { (*self.0.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }

    fn same_as(&self, other: &Self) -> bool {
        // SAFETY: both SIDs are valid for as long as their buffers live.
        unsafe { EqualSid(self.sid(), other.sid()) != 0 }
    }

    /// The SID in its `S-1-5-…` form.
    fn sid_string(&self) -> io::Result<String> {
        let mut wide: *mut u16 = std::ptr::null_mut();
        // SAFETY: `sid()` is valid; Windows allocates `wide`, which we free with LocalFree.
        if unsafe { ConvertSidToStringSidW(self.sid(), &mut wide) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wide` is a NUL-terminated UTF-16 string from Windows.
        let s = unsafe {
            let len = (0..).take_while(|&i| *wide.add(i) != 0).count();
            String::from_utf16_lossy(std::slice::from_raw_parts(wide, len))
        };
        // SAFETY: allocated by ConvertSidToStringSidW.
        unsafe { LocalFree(wide.cast()) };
        Ok(s)
    }
}

/// Security attributes for a pipe that only this process's user and SYSTEM may open.
pub(super) struct PipeSecurity {
    attrs: SECURITY_ATTRIBUTES,
}

impl PipeSecurity {
    /// A protected DACL: full access for the current user and SYSTEM, nothing for anyone else
    /// (not even reading, which the default descriptor grants to everyone).
    pub(super) fn only_this_user() -> io::Result<Self> {
        let sddl = format!(
            "D:P(A;;GA;;;{})(A;;GA;;;SY)",
            UserOf::current()?.sid_string()?
        );
        let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
        let mut descriptor: *mut c_void = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated; Windows allocates the descriptor (freed on drop).
        if unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        } == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            attrs: SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: descriptor,
                bInheritHandle: 0,
            },
        })
    }

    /// The pointer `CreateNamedPipeW` takes (which only reads it); valid while `self` lives.
    pub(super) fn as_ptr(&self) -> *mut c_void {
        std::ptr::from_ref(&self.attrs).cast_mut().cast()
    }
}

impl Drop for PipeSecurity {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW.
        unsafe { LocalFree(self.attrs.lpSecurityDescriptor) };
    }
}

// SAFETY: the descriptor is plain memory owned by this value; Windows only reads it.
unsafe impl Send for PipeSecurity {}
// SAFETY: as above; nothing writes through the pointer `as_ptr` gives.
unsafe impl Sync for PipeSecurity {}

/// Fails unless the process serving the pipe `pipe` runs as the same user as this process.
pub(super) fn check_server_is_us(pipe: &impl AsRawHandle) -> io::Result<()> {
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the node's control pipe is served by {why}; another user may be \
                 impersonating the node (stop that process, or use another --home)"
            ),
        )
    };
    let mut pid = 0u32;
    // SAFETY: `pipe` is an open pipe client handle.
    if unsafe { GetNamedPipeServerProcessId(pipe.as_raw_handle(), &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: opening a process by id; the handle is owned below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(refuse(format!(
            "process {pid}, which this user may not inspect ({})",
            io::Error::last_os_error()
        )));
    }
    let process = Owned(process);
    let server = UserOf::process(process.0).map_err(|e| {
        refuse(format!(
            "process {pid}, whose user this user may not read ({e})"
        ))
    })?;
    if !server.same_as(&UserOf::current()?) {
        return Err(refuse(format!(
            "process {pid}, which runs as another user ({})",
            server.sid_string().unwrap_or_default()
        )));
    }
    Ok(())
}
