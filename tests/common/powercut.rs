//! A filesystem that can lose power: a FUSE filesystem in the test process's memory that keeps
//! what was written apart from what was made durable, as a disk with a volatile cache does.
//!
//! A file's contents become durable when the file is fsync'd (or fdatasync'd); a directory's
//! entries (files created, removed, renamed in it) when the directory is fsync'd. [`PowerCut::cut`]
//! drops everything else, as losing power does, and from then on every operation fails with
//! `EIO` until the filesystem is mounted again over what survived. This is stricter than most
//! real filesystems (ext4 usually commits directory entries with its journal within seconds):
//! whatever a program did not sync, it cannot count on.
//!
//! Needs `/dev/fuse` and either root or `fusermount3` (Debian's `fuse3`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow,
};

const ROOT: u64 = fuser::FUSE_ROOT_ID;
/// Attributes and entries are not cached by the kernel: every call reaches this filesystem.
const TTL: Duration = Duration::ZERO;
const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTEMPTY: i32 = 39;

#[derive(Default)]
struct Inode {
    dir: bool,
    perm: u16,
    /// The contents as written (files).
    data: Vec<u8>,
    /// The contents as of the last fsync (files).
    synced: Vec<u8>,
    /// Byte ranges written since the last fsync.
    dirty: Vec<(usize, usize)>,
    /// Entries as they are (directories).
    entries: BTreeMap<OsString, u64>,
    /// Entries as of the last fsync of the directory.
    synced_entries: BTreeMap<OsString, u64>,
    mtime: Option<SystemTime>,
}

impl Inode {
    fn sync(&mut self) {
        self.synced.resize(self.data.len(), 0);
        for (start, end) in self.dirty.drain(..) {
            let end = end.min(self.data.len());
            if start < end {
                self.synced[start..end].copy_from_slice(&self.data[start..end]);
            }
        }
    }
}

/// What the filesystem holds, shared by every mount of it.
struct State {
    inodes: HashMap<u64, Inode>,
    next: u64,
    /// Power is off: every operation fails.
    dead: bool,
    /// fsync and fsyncdir calls served, for the test to show it exercised them.
    syncs: u64,
    /// Who owns every file.
    owner: (u32, u32),
}

/// The filesystem, as the test holds it.
#[derive(Clone)]
pub struct PowerCut {
    state: Arc<Mutex<State>>,
}

impl Default for PowerCut {
    fn default() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                dir: true,
                perm: 0o755,
                ..Inode::default()
            },
        );
        PowerCut {
            state: Arc::new(Mutex::new(State {
                inodes,
                next: ROOT + 1,
                dead: false,
                syncs: 0,
                owner: ids(),
            })),
        }
    }
}

/// A mounted [`PowerCut`]; unmounted when dropped.
pub struct Mounted {
    _session: BackgroundSession,
    pub path: PathBuf,
}

impl PowerCut {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mounts the filesystem (with power on) at `path`, an empty directory.
    pub fn mount(&self, path: &Path) -> std::io::Result<Mounted> {
        self.lock().dead = false;
        let session = fuser::spawn_mount2(
            Fs(self.clone()),
            path,
            &[
                MountOption::FSName("riskgate-powercut".into()),
                MountOption::DefaultPermissions,
            ],
        )?;
        Ok(Mounted {
            _session: session,
            path: path.to_owned(),
        })
    }

    /// Cuts the power: everything not synced is gone, and every later operation fails until
    /// the next mount.
    pub fn cut(&self) {
        let mut state = self.lock();
        state.dead = true;
        for inode in state.inodes.values_mut() {
            inode.data = inode.synced.clone();
            inode.dirty.clear();
            inode.entries = inode.synced_entries.clone();
        }
    }

    /// fsync and fsyncdir calls served so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

/// Whether this machine can mount a FUSE filesystem here: `/dev/fuse` and root or
/// `fusermount3`.
pub fn available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    let fusermount = std::process::Command::new("fusermount3")
        .arg("--version")
        .output()
        .is_ok();
    if !root && !fusermount {
        return Err("not root and no fusermount3 (Debian: fuse3)".into());
    }
    Ok(())
}

struct Fs(PowerCut);

impl Fs {
    fn attr(ino: u64, inode: &Inode, owner: (u32, u32)) -> FileAttr {
        let at = inode.mtime.unwrap_or(SystemTime::UNIX_EPOCH);
        FileAttr {
            ino,
            size: inode.data.len() as u64,
            blocks: (inode.data.len() as u64).div_ceil(512),
            atime: at,
            mtime: at,
            ctime: at,
            crtime: at,
            kind: if inode.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: inode.perm,
            nlink: if inode.dir { 2 } else { 1 },
            uid: owner.0,
            gid: owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The state, or `None` (and the reply gets `EIO`) while the power is off.
    fn live(&self) -> Option<MutexGuard<'_, State>> {
        let state = self.0.lock();
        (!state.dead).then_some(state)
    }

    fn make(
        &self,
        parent: u64,
        name: &OsStr,
        dir: bool,
        mode: u32,
    ) -> Result<(u64, FileAttr), i32> {
        let mut state = self.live().ok_or(EIO)?;
        let ino = state.next;
        let exists = state
            .inodes
            .get(&parent)
            .ok_or(ENOENT)?
            .entries
            .contains_key(name);
        if exists {
            return Err(EEXIST);
        }
        state.next += 1;
        let inode = Inode {
            dir,
            perm: (mode & 0o7777) as u16,
            mtime: Some(SystemTime::now()),
            ..Inode::default()
        };
        let attr = Self::attr(ino, &inode, state.owner);
        state.inodes.insert(ino, inode);
        if let Some(p) = state.inodes.get_mut(&parent) {
            p.entries.insert(name.to_owned(), ino);
        }
        Ok((ino, attr))
    }
}

/// The test process's uid and gid, so that files belong to whoever runs the server.
fn ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

impl Fs {
    /// fsync and fsyncdir: `sync` makes what `ino` holds durable.
    fn sync(&self, ino: u64, reply: ReplyEmpty, sync: impl FnOnce(&mut Inode)) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        state.syncs += 1;
        match state.inodes.get_mut(&ino) {
            Some(inode) => {
                sync(inode);
                reply.ok()
            }
            None => reply.error(ENOENT),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(state) = self.live() else {
            return reply.error(EIO);
        };
        let found = state
            .inodes
            .get(&parent)
            .and_then(|p| p.entries.get(name))
            .and_then(|ino| {
                state
                    .inodes
                    .get(ino)
                    .map(|inode| Self::attr(*ino, inode, state.owner))
            });
        match found {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let Some(state) = self.live() else {
            return reply.error(EIO);
        };
        match state.inodes.get(&ino) {
            Some(inode) => reply.attr(&TTL, &Self::attr(ino, inode, state.owner)),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        let owner = state.owner;
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return reply.error(ENOENT);
        };
        if let Some(mode) = mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        if let Some(size) = size {
            let (old, new) = (inode.data.len(), size as usize);
            inode.data.resize(new, 0);
            if new > old {
                inode.dirty.push((old, new));
            }
            inode.mtime = Some(SystemTime::now());
        }
        reply.attr(&TTL, &Self::attr(ino, inode, owner));
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(parent, name, true, mode) {
            Ok((_, attr)) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, false, mode) {
            Ok((ino, attr)) => reply.created(&TTL, &attr, 0, ino, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        match state
            .inodes
            .get_mut(&parent)
            .and_then(|p| p.entries.remove(name))
        {
            Some(_) => reply.ok(),
            None => reply.error(ENOENT),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        let child = state
            .inodes
            .get(&parent)
            .and_then(|p| p.entries.get(name).copied());
        match child.and_then(|c| state.inodes.get(&c)) {
            None => reply.error(ENOENT),
            Some(c) if !c.entries.is_empty() => reply.error(ENOTEMPTY),
            Some(_) => {
                if let Some(p) = state.inodes.get_mut(&parent) {
                    p.entries.remove(name);
                }
                reply.ok()
            }
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        let Some(ino) = state
            .inodes
            .get_mut(&parent)
            .and_then(|p| p.entries.remove(name))
        else {
            return reply.error(ENOENT);
        };
        match state.inodes.get_mut(&newparent) {
            Some(p) => {
                p.entries.insert(newname.to_owned(), ino);
                reply.ok()
            }
            None => reply.error(ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.live() {
            Some(_) => reply.opened(ino, 0),
            None => reply.error(EIO),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(state) = self.live() else {
            return reply.error(EIO);
        };
        let Some(inode) = state.inodes.get(&ino) else {
            return reply.error(ENOENT);
        };
        let start = (offset.max(0) as usize).min(inode.data.len());
        let end = (start + size as usize).min(inode.data.len());
        reply.data(&inode.data[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Some(mut state) = self.live() else {
            return reply.error(EIO);
        };
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return reply.error(ENOENT);
        };
        let start = offset.max(0) as usize;
        let end = start + data.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[start..end].copy_from_slice(data);
        inode.dirty.push((start, end));
        inode.mtime = Some(SystemTime::now());
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply, Inode::sync);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(state) = self.live() else {
            return reply.error(EIO);
        };
        let Some(dir) = state.inodes.get(&ino) else {
            return reply.error(ENOENT);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for (name, child) in &dir.entries {
            let kind = match state.inodes.get(child) {
                Some(c) if c.dir => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply, |dir| dir.synced_entries = dir.entries.clone());
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 22, 1 << 21, 1 << 21, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        match self.live() {
            Some(_) => reply.ok(),
            None => reply.error(EIO),
        }
    }
}
