//! A filesystem for power-loss tests: held in memory and served over FUSE, it keeps two
//! copies of every file, what was written and what was synced. [`Mount::power_cut`] throws
//! away everything written since the last `fsync`/`fdatasync` of each file, as a machine
//! that loses power loses its page cache, so a store that acknowledges a commit before
//! syncing it loses the commit here, where a process kill (the page cache survives it)
//! would not show it.
//!
//! The model, like LazyFS's: file contents are durable only once synced; names (create,
//! rename, unlink, mkdir) are durable at once. Every read and write reaches this process
//! (`direct_io`, no attribute or entry caching), so what the kernel shows after a cut is
//! what the cut left.
//!
//! Mounting needs `/dev/fuse` and root (the mount is made directly, without `fusermount`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// Nothing is cached by the kernel: sizes and names change under it at a power cut.
const TTL: Duration = Duration::ZERO;

#[derive(Debug)]
enum Content {
    Dir(BTreeMap<OsString, u64>),
    File {
        /// What reads see.
        data: Vec<u8>,
        /// What survives a power cut.
        synced: Vec<u8>,
        /// The lowest offset changed since the last sync (`None`: nothing unsynced).
        dirty_from: Option<usize>,
    },
}

#[derive(Debug)]
struct Node {
    content: Content,
    /// Names of a file (hard links).
    links: u32,
    perm: u16,
    mtime: SystemTime,
}

/// What the filesystem has seen, for a test to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Files that lost unsynced bytes at the power cuts, in all.
    pub files_cut: u64,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    stats: Stats,
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                content: Content::Dir(BTreeMap::new()),
                links: 1,
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        State {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            stats: Stats::default(),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.content {
            Content::Dir(_) => (FileType::Directory, 0, 2),
            Content::File { data, .. } => (FileType::RegularFile, data.len() as u64, n.links),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::Dir(entries)) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir_mut(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        content: Content,
        mode: u32,
    ) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let entries = self.dir_mut(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_owned(), ino);
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                content,
                links: 1,
                perm: (mode & 0o7777) as u16,
                mtime: SystemTime::now(),
            },
        );
        Ok(ino)
    }

    /// A file's bytes and the lowest offset changed since its last sync.
    fn file(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Option<usize>), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        node.mtime = SystemTime::now();
        match &mut node.content {
            Content::File {
                data, dirty_from, ..
            } => Ok((data, dirty_from)),
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }
}

/// The filesystem served to the kernel.
struct LossyFs {
    state: Arc<Mutex<State>>,
}

impl LossyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }
}

fn new_file() -> Content {
    Content::File {
        data: Vec::new(),
        synced: Vec::new(),
        dirty_from: None,
    }
}

fn mark(dirty_from: &mut Option<usize>, at: usize) {
    *dirty_from = Some(dirty_from.map_or(at, |d| d.min(at)));
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent.0, name) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("a child exists"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let Some(node) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(mode) = mode {
            node.perm = (mode & 0o7777) as u16;
        }
        if let Some(size) = size {
            let Content::File {
                data, dirty_from, ..
            } = &mut node.content
            else {
                return reply.error(Errno::EISDIR);
            };
            let size = size as usize;
            mark(dirty_from, size.min(data.len()));
            data.resize(size, 0);
            node.mtime = SystemTime::now();
        }
        reply.attr(&TTL, &s.attr(ino.0).expect("exists"));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut s = self.lock();
        match s.make(parent.0, name, new_file(), mode) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("made"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        match s.make(parent.0, name, Content::Dir(BTreeMap::new()), mode) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("made"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let ino = match s.child(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        if matches!(s.nodes[&ino].content, Content::Dir(_)) {
            return reply.error(Errno::EISDIR);
        }
        s.dir_mut(parent.0).expect("a directory").remove(name);
        // The inode stays readable through handles still open (never reused).
        if let Some(n) = s.nodes.get_mut(&ino) {
            n.links = n.links.saturating_sub(1);
        }
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        match s.nodes.get(&ino.0).map(|n| &n.content) {
            Some(Content::File { .. }) => {}
            Some(Content::Dir(_)) => return reply.error(Errno::EPERM),
            None => return reply.error(Errno::ENOENT),
        }
        let entries = match s.dir_mut(newparent.0) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        if entries.contains_key(newname) {
            return reply.error(Errno::EEXIST);
        }
        entries.insert(newname.to_owned(), ino.0);
        s.nodes.get_mut(&ino.0).expect("exists").links += 1;
        reply.entry(&TTL, &s.attr(ino.0).expect("exists"), Generation(0));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let ino = match s.child(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        match &s.nodes[&ino].content {
            Content::Dir(entries) if !entries.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Content::Dir(_) => {}
            Content::File { .. } => return reply.error(Errno::ENOTDIR),
        }
        s.dir_mut(parent.0).expect("a directory").remove(name);
        s.nodes.remove(&ino);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let mut s = self.lock();
        let ino = match s.child(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        let replaced = match s.child(newparent.0, newname) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                return reply.error(Errno::EEXIST);
            }
            Ok(old) if old == ino => return reply.ok(),
            Ok(old) => {
                if let Content::Dir(entries) = &s.nodes[&old].content
                    && !entries.is_empty()
                {
                    return reply.error(Errno::ENOTEMPTY);
                }
                Some(old)
            }
            Err(e) if e == Errno::ENOENT => None,
            Err(e) => return reply.error(e),
        };
        s.dir_mut(parent.0).expect("a directory").remove(name);
        s.dir_mut(newparent.0)
            .expect("a directory")
            .insert(newname.to_owned(), ino);
        if let Some(n) = replaced.and_then(|old| s.nodes.get_mut(&old)) {
            n.links = n.links.saturating_sub(1);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.lock().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let ino = match s.make(parent.0, name, new_file(), mode) {
            Ok(ino) => ino,
            Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                s.child(parent.0, name).expect("exists")
            }
            Err(e) => return reply.error(e),
        };
        if flags & libc::O_TRUNC != 0
            && let Ok((data, dirty_from)) = s.file(ino)
        {
            data.clear();
            mark(dirty_from, 0);
        }
        let attr = s.attr(ino).expect("made");
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        match s.nodes.get(&ino.0).map(|n| &n.content) {
            Some(Content::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Content::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let (data, dirty_from) = match s.file(ino.0) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let at = offset as usize;
        let end = at + bytes.len();
        if data.len() < end {
            mark(dirty_from, data.len().min(at));
            data.resize(end, 0);
        }
        data[at..end].copy_from_slice(bytes);
        mark(dirty_from, at);
        s.stats.bytes_written += bytes.len() as u64;
        reply.written(bytes.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing a file syncs nothing.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let Some(node) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Content::File {
            data,
            synced,
            dirty_from,
        } = &mut node.content
            && let Some(from) = dirty_from.take()
        {
            let from = from.min(data.len()).min(synced.len());
            synced.truncate(from);
            synced.extend_from_slice(&data[from..]);
        }
        s.stats.file_syncs += 1;
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let entries: Vec<(u64, OsString)> = match s.dir_mut(ino.0) {
            Ok(e) => e.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let listing = [(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))]
            .into_iter()
            .chain(entries);
        for (i, (child, name)) in listing.enumerate().skip(offset as usize) {
            let kind = match s.nodes.get(&child).map(|n| &n.content) {
                Some(Content::File { .. }) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable at once in this model.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 28, 1 << 28, 1 << 28, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let mut s = self.lock();
        match s.file(ino.0) {
            Ok((data, dirty_from)) => {
                let end = (offset + length) as usize;
                if data.len() < end {
                    mark(dirty_from, data.len());
                    data.resize(end, 0);
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted lossy filesystem; unmounted when dropped.
pub struct Mount {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Mount {
    /// Mounts an empty filesystem on `path` (an existing, empty directory).
    pub fn new(path: &Path) -> io::Result<Mount> {
        let state = Arc::new(Mutex::new(State::new()));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("lossyfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(
            LossyFs {
                state: Arc::clone(&state),
            },
            path,
            &config,
        )?;
        Ok(Mount {
            session: Some(session),
            state,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The power goes: every file goes back to what it held at its last sync. Whoever was
    /// writing must be dead already (a cut under a live writer is not a power cut).
    pub fn power_cut(&self) {
        let mut s = self.state.lock().expect("not poisoned");
        let mut cut = 0;
        for node in s.nodes.values_mut() {
            if let Content::File {
                data,
                synced,
                dirty_from,
            } = &mut node.content
                && dirty_from.take().is_some()
            {
                if data != synced {
                    cut += 1;
                }
                data.clone_from(synced);
            }
        }
        s.stats.power_cuts += 1;
        s.stats.files_cut += cut;
    }

    pub fn stats(&self) -> Stats {
        self.state.lock().expect("not poisoned").stats
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}
