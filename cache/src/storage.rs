//! In-memory cache storage for pingora-cache, bounded in bytes by moka.
//!
//! An object goes through two places. While its body is still arriving from the origin it is a
//! [`Fill`] in the `filling` table: readers that found it (pingora hands them over as soon as the
//! response header is in, which is what the cache lock's readers wait for) read the chunks as
//! they arrive and wait on a watch channel for more. When the body is complete the fill becomes
//! a [`Stored`] object in the moka cache, weighed by its size. Only complete objects can be
//! evicted, and a reader holds its body by reference count, so eviction never takes away a part a
//! viewer is waiting for or reading: a blocked viewer's part is either still filling (not
//! evictable) or already held by the viewer.
//!
//! While filling, bodies are the `Bytes` chunks the origin sent. A complete body of at least
//! `FILE_BODY_MIN` bytes moves into a file (`BodyFile`: a memfd, or an unnamed file in the
//! body directory when the edge has one): a fresh hit on a plain-TCP
//! connection is then sent with `sendfile` from those pages (`direct`), without copying
//! the body through user space. Smaller bodies (and all of them when no more memfds may be opened)
//! stay one contiguous `Bytes`: a hit hands out clones of it, no copy.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::streaming_write::U64WriteId;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use tokio::sync::watch;

/// Bytes counted per object on top of its body: the key, the header and the bookkeeping.
const OBJECT_OVERHEAD: usize = 512;

/// Complete bodies from this size on are kept in a memfd and sent with `sendfile`; below it a
/// plain write of the in-memory copy is as cheap and costs no file descriptor.
pub(crate) const FILE_BODY_MIN: usize = 16 * 1024;

/// The parts of a [`CacheMeta`] we keep, so a hit rebuilds it without a serialization round trip.
#[derive(Clone)]
struct StoredMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: ResponseHeader,
}

impl StoredMeta {
    fn from_meta(meta: &CacheMeta) -> Self {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
        }
    }

    fn to_meta(&self) -> CacheMeta {
        CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        )
    }
}

/// A complete object.
struct Stored {
    meta: RwLock<StoredHead>,
    body: Body,
    size: usize,
    /// Fills of this object's key begun while it was stored and not ended yet: while there is
    /// one, a newer copy is arriving and [`MokaStorage::fresh_hit`] leaves the request to
    /// pingora (which reads the fill). Kept on the object so a hit need not lock the fill table.
    /// A copy stored by a fill that overlapped another of its key is not marked by the other:
    /// hits may send it, complete and fresh, while that one still fills.
    refills: AtomicUsize,
}

/// A complete object's header: the parts of its meta, and the HTTP/1.1 headers a fresh hit sends.
struct StoredHead {
    meta: StoredMeta,
    /// Header lines, without the status line, framing and `age` (see [`crate::direct`]).
    wire: Bytes,
}

impl StoredHead {
    fn new(mut meta: StoredMeta, size: usize) -> Self {
        // The size is known now, whatever framing the origin used: pingora's hit path answers
        // range requests only when the stored header has a content-length.
        if !meta.header.headers.contains_key(http::header::CONTENT_LENGTH) {
            meta.header.remove_header(&http::header::TRANSFER_ENCODING);
            // A number is always a valid header value.
            let _ = meta.header.insert_header(http::header::CONTENT_LENGTH, size);
        }
        let wire = crate::direct::hit_headers(&meta.header);
        StoredHead { meta, wire }
    }
}

/// A complete body.
#[derive(Clone)]
pub(crate) enum Body {
    /// In memory, as one contiguous chunk (or none when empty).
    Memory(Arc<[Bytes]>),
    /// In a memfd.
    File(Arc<BodyFile>),
}

/// A body in a file of its own, a sealed memfd or an unnamed file ([`crate::pages`]). The pages
/// stay shared with the kernel's socket buffers while `sendfile` sends them (they are never
/// written again), so eviction while a send is in flight is harmless; every other hit path reads
/// them through `pages`.
pub(crate) struct BodyFile {
    pub(crate) file: File,
    pub(crate) len: usize,
    /// The same pages, mapped read-only: slices of it are the body without a copy.
    pages: Bytes,
    /// Body files open, shared with the storage, so their number stays bounded.
    open: Arc<AtomicUsize>,
    /// Reads of mapped pages, shared with the storage (see [`MokaStorage::page_reads`]).
    page_reads: Arc<AtomicU64>,
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fresh complete object, for [`crate::direct`] to send without pingora's hit path.
pub(crate) struct FreshHit {
    pub(crate) status: http::StatusCode,
    /// The header lines, without the status line, framing and `age`.
    pub(crate) head: Bytes,
    pub(crate) age_secs: u64,
    pub(crate) size: usize,
    pub(crate) body: Body,
}

/// How far a fill has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillState {
    /// This many chunks are readable; more may come.
    Partial(usize),
    /// All chunks are in.
    Complete(usize),
    /// The origin response broke off: readers must not take what they got for the whole body.
    Failed,
}

/// An object whose body is still arriving.
struct Fill {
    id: u64,
    meta: StoredMeta,
    chunks: Arc<RwLock<Vec<Bytes>>>,
    state: watch::Sender<FillState>,
}

type FillTable = Mutex<HashMap<String, Arc<Fill>>>;

/// Byte-bounded in-memory storage: moka for complete objects, a table of fills in progress.
pub struct MokaStorage {
    objects: moka::sync::Cache<String, Arc<Stored>>,
    filling: Arc<FillTable>,
    next_fill: AtomicU64,
    /// Bytes of complete objects held: added on insert, taken off by moka's eviction listener.
    bytes: Arc<AtomicU64>,
    /// Memfds open for bodies, and how many may be: a quarter of the open-file limit, so they
    /// never starve the accept loop of descriptors.
    files_open: Arc<AtomicUsize>,
    files_max: usize,
    page_reads: Arc<AtomicU64>,
    /// Where body files go (`crate::pages::body_file`); `None`: memfds.
    body_dir: Option<Arc<Path>>,
}

fn weight(size: usize) -> u64 {
    (size + OBJECT_OVERHEAD) as u64
}

impl MokaStorage {
    /// Storage that keeps at most about `max_bytes` of complete objects (bodies plus a fixed
    /// overhead each). Objects still filling are not counted until they complete.
    pub fn new(max_bytes: u64) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let evicted = bytes.clone();
        let objects = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // Live viewers want the newest parts; a frequency-based admission would turn newcomers away.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|_key: &String, object: &Arc<Stored>| u32::try_from(weight(object.size)).unwrap_or(u32::MAX))
            .eviction_listener(move |_key, object: Arc<Stored>, _cause| {
                evicted.fetch_sub(weight(object.size), Ordering::Relaxed);
            })
            .build();
        let files_max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |limit| usize::try_from(limit / 4).unwrap_or(usize::MAX));
        MokaStorage {
            objects,
            filling: Arc::default(),
            next_fill: AtomicU64::new(1),
            bytes,
            files_open: Arc::default(),
            files_max,
            page_reads: Arc::default(),
            body_dir: None,
        }
    }

    /// Storage that keeps its body files in `dir` (unnamed files, gone when closed) rather than
    /// in memfds; see [`crate::pages::body_file`] for why.
    pub fn with_body_dir(mut self, dir: &Path) -> Self {
        self.body_dir = Some(Arc::from(dir));
        self
    }

    /// Storage that keeps every body in memory, never in a memfd.
    pub fn without_files(mut self) -> Self {
        self.files_max = 0;
        self
    }

    /// Hits whose body went out as slices of its mapped pages, without a copy (every hit of a
    /// memfd body that is not a plain-TCP `sendfile`: TLS, HTTP/2, ranges via pingora).
    pub fn page_reads(&self) -> u64 {
        self.page_reads.load(Ordering::Relaxed)
    }

    /// Complete bodies held in memfds.
    pub fn file_count(&self) -> usize {
        self.files_open.load(Ordering::Relaxed)
    }

    /// The complete object at `combined_key` if it is fresh at `now` and no newer fill of it is
    /// arriving: what a hit may send without pingora's cache phases (no lock, no revalidation).
    pub(crate) fn fresh_hit(&self, combined_key: &str, now: SystemTime) -> Option<FreshHit> {
        let object = self.objects.get(combined_key)?;
        if object.refills.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = object.meta.read().ok()?;
        if head.meta.fresh_until <= now {
            return None;
        }
        let age_secs = now.duration_since(head.meta.created).map_or(0, |d| d.as_secs());
        Some(FreshHit {
            status: head.meta.header.status,
            head: head.wire.clone(),
            age_secs,
            size: object.size,
            body: object.body.clone(),
        })
    }

    /// Bytes of complete objects held, bodies plus a fixed overhead each. Evictions are applied
    /// lazily (or by [`MokaStorage::run_pending_tasks`]), so this may briefly exceed the budget.
    pub fn weighted_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Complete objects held.
    pub fn object_count(&self) -> u64 {
        self.objects.entry_count()
    }

    /// Objects whose body is still arriving.
    pub fn filling_count(&self) -> usize {
        self.filling.lock().map_or(0, |f| f.len())
    }

    /// Apply pending admissions and evictions now (moka does it lazily).
    pub fn run_pending_tasks(&self) {
        self.objects.run_pending_tasks();
    }

    /// Whether a complete object is held for `key` (as made by [`CacheKey::combined`]).
    pub fn contains(&self, combined_key: &str) -> bool {
        self.objects.contains_key(combined_key)
    }

    fn fill_hit(fill: &Fill) -> (CacheMeta, HitHandler) {
        let hit = FillHit {
            chunks: fill.chunks.clone(),
            state: fill.state.subscribe(),
            read: 0,
            offset: 0,
            range: 0..usize::MAX,
        };
        (fill.meta.to_meta(), Box::new(hit))
    }
}

#[async_trait]
impl Storage for MokaStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = ObjectKey::of(key);
        // A fill in progress is newer than any complete copy: prefer it.
        let fill = self.filling.lock().ok().and_then(|f| f.get(hash.as_str()).cloned());
        if let Some(fill) = fill {
            return Ok(Some(Self::fill_hit(&fill)));
        }
        Ok(self.objects.get(hash.as_str()).map(|object| {
            let meta = object.meta.read().map(|m| m.meta.to_meta()).unwrap_or_else(|p| p.into_inner().meta.to_meta());
            let hit: HitHandler = Box::new(StoredHit::new(object.body.clone(), object.size));
            (meta, hit)
        }))
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = streaming_write_tag.and_then(|t| U64WriteId::try_from(t).ok()) else {
            return self.lookup(key, trace).await;
        };
        let id = u64::from(tag);
        let hash = ObjectKey::of(key);
        let fill = self.filling.lock().ok().and_then(|f| f.get(hash.as_str()).filter(|fill| fill.id == id).cloned());
        Ok(fill.map(|fill| Self::fill_hit(&fill)))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = ObjectKey::of(key).as_str().to_owned();
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let (state, _) = watch::channel(FillState::Partial(0));
        let fill =
            Arc::new(Fill { id, meta: StoredMeta::from_meta(meta), chunks: Arc::new(RwLock::new(Vec::new())), state });
        self.filling
            .lock()
            .map_err(|_| Error::explain(ErrorType::InternalError, "fill table poisoned"))?
            .insert(hash.clone(), fill.clone());
        // After the fill is in the table: a hit that finds the old copy unmarked may still
        // send it, as one that found the table without the fill would have.
        let replacing = self.objects.get(&hash);
        if let Some(old) = &replacing {
            old.refills.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Box::new(FillWriter {
            fill,
            replacing,
            key: hash,
            tag: U64WriteId::from(id),
            size: 0,
            objects: self.objects.clone(),
            bytes: self.bytes.clone(),
            filling: self.filling.clone(),
            files_open: self.files_open.clone(),
            files_max: self.files_max,
            page_reads: self.page_reads.clone(),
            body_dir: self.body_dir.clone(),
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _why: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = ObjectKey::of(target.key());
        Ok(match self.objects.remove(hash.as_str()) {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let Some(object) = self.objects.get(ObjectKey::of(key).as_str()) else {
            return Ok(false);
        };
        if let Ok(mut stored) = object.meta.write() {
            *stored = StoredHead::new(StoredMeta::from_meta(meta), object.size);
        }
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// The key an object is stored under: the hex of its combined hash, the same string as
/// [`CacheHashKey::combined`] but made on the stack with a table, not with `fmt` into a new
/// `String` (formatting was 5% of an edge thread's samples at 100 KB hits).
#[derive(Clone, Copy)]
pub(crate) struct ObjectKey([u8; 32]);

impl ObjectKey {
    pub(crate) fn of(key: &impl CacheHashKey) -> Self {
        Self::from_hash(&key.combined_bin())
    }

    /// The key of the object the edge caches for `primary`, its cache key without variance (as
    /// `crate::proxy` makes it: `CacheKey::new(primary, "")`), without building a `CacheKey`.
    /// Taken from the thread's [`PrimaryKeys`] when it made this one lately.
    pub(crate) fn of_primary(primary: &str) -> Self {
        PRIMARY_KEYS.with_borrow_mut(|keys| keys.get_or_make(primary))
    }

    fn hash_primary(primary: &str) -> Self {
        Self::from_hash(&pingora_cache::key::hash_key(primary))
    }

    fn from_hash(hash: &HashBinary) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(hash) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        ObjectKey(hex)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

thread_local! {
    static PRIMARY_KEYS: RefCell<PrimaryKeys> = RefCell::new(PrimaryKeys::default());
}

/// Slots of [`PrimaryKeys`].
const PRIMARY_KEY_SLOTS: usize = 64;
/// Longer primary keys are hashed every time rather than remembered.
const PRIMARY_KEY_MAX: usize = 256;

/// The object keys a thread made last, by primary key. Every viewer of a channel asks for its
/// newest part within a part target, and hashing the part's name with BLAKE2 for each was 2% of
/// an edge thread's samples at 100 KB hits. Direct-mapped: a name's slot is picked by a cheap
/// hash of it, and a later name that picks the same slot takes it over.
struct PrimaryKeys {
    slots: Vec<Option<(Box<str>, ObjectKey)>>,
    /// Keys found in a slot and keys hashed, for the tests.
    found: u64,
    made: u64,
}

impl Default for PrimaryKeys {
    fn default() -> Self {
        PrimaryKeys { slots: vec![None; PRIMARY_KEY_SLOTS], found: 0, made: 0 }
    }
}

impl PrimaryKeys {
    fn get_or_make(&mut self, primary: &str) -> ObjectKey {
        if primary.len() > PRIMARY_KEY_MAX {
            self.made += 1;
            return ObjectKey::hash_primary(primary);
        }
        let slot = &mut self.slots[slot_of(primary)];
        if let Some((name, key)) = slot {
            if **name == *primary {
                self.found += 1;
                return *key;
            }
        }
        self.made += 1;
        let key = ObjectKey::hash_primary(primary);
        *slot = Some((primary.into(), key));
        key
    }
}

/// [`PrimaryKeys`]' slot for `primary`: FNV-1a of its bytes. The names of one channel's parts
/// differ in their last characters, which FNV mixes into every bit.
fn slot_of(primary: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in primary.as_bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    (hash as usize) % PRIMARY_KEY_SLOTS
}

/// Reads a complete object, chunk by chunk, or the byte range pingora seeks to.
struct StoredHit {
    body: Body,
    /// The next chunk to read.
    next: usize,
    /// Byte offset of that chunk in the body.
    offset: usize,
    size: usize,
    /// The bytes to read (the whole body unless seeking).
    range: std::ops::Range<usize>,
}

impl StoredHit {
    fn new(body: Body, size: usize) -> Self {
        StoredHit { body, next: 0, offset: 0, size, range: 0..size }
    }
}

/// `start..end` of a body of `size` bytes as pingora's `seek` means it: `end` `None` is the end
/// of the body, an end past it is cut to it, a start at or past it is an error.
fn seek_range(start: usize, end: Option<usize>, size: usize) -> Result<std::ops::Range<usize>> {
    if start >= size {
        return Error::e_explain(ErrorType::InternalError, format!("seek to {start} in a {size}-byte body"));
    }
    Ok(start..end.map_or(size, |end| end.min(size)))
}

#[async_trait]
impl HandleHit for StoredHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.offset >= self.range.end {
                return Ok(None);
            }
            let chunk = match &self.body {
                Body::Memory(chunks) => chunks.get(self.next).cloned(),
                // pingora's own hit path (TLS, HTTP/2, stale answers) sends a slice of the pages.
                Body::File(body) if self.next == 0 && self.range.start < self.range.end => {
                    let end = self.range.end.min(body.len);
                    self.next = 1;
                    self.offset = self.range.end;
                    body.page_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(body.pages.slice(self.range.start..end)));
                }
                Body::File(_) => None,
            };
            let Some(chunk) = chunk else { return Ok(None) };
            let (start, end) = (self.offset, self.offset + chunk.len());
            self.next += 1;
            self.offset = end;
            let from = self.range.start.max(start);
            let to = self.range.end.min(end);
            if from < to {
                return Ok(Some(chunk.slice(from - start..to - start)));
            }
        }
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.range = seek_range(start, end, self.size)?;
        // Seeking again (multipart ranges) reads from the start of the body again.
        self.next = 0;
        self.offset = 0;
        Ok(())
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.size
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Reads an object while it is still arriving, whole or the byte range pingora seeks to.
struct FillHit {
    chunks: Arc<RwLock<Vec<Bytes>>>,
    state: watch::Receiver<FillState>,
    /// Chunks read so far.
    read: usize,
    /// Byte offset of the next chunk in the body.
    offset: usize,
    /// The bytes to read; the end is not known before the fill completes.
    range: std::ops::Range<usize>,
}

#[async_trait]
impl HandleHit for FillHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let state = *self.state.borrow_and_update();
            let available = match state {
                FillState::Failed => {
                    return Error::e_explain(ErrorType::ReadError, "origin response broke off during fill")
                }
                FillState::Complete(n) if n == self.read => return Ok(None),
                FillState::Complete(n) | FillState::Partial(n) => n,
            };
            if self.offset >= self.range.end {
                return Ok(None);
            }
            if available > self.read {
                let chunk = self.chunks.read().ok().and_then(|c| c.get(self.read).cloned());
                self.read += 1;
                if let Some(chunk) = chunk {
                    let (start, end) = (self.offset, self.offset + chunk.len());
                    self.offset = end;
                    let from = self.range.start.max(start);
                    let to = self.range.end.min(end);
                    if from < to {
                        return Ok(Some(chunk.slice(from - start..to - start)));
                    }
                }
                continue;
            }
            if self.state.changed().await.is_err() {
                // The writer is gone without completing: same as a failed fill.
                if !matches!(*self.state.borrow(), FillState::Complete(_)) {
                    return Error::e_explain(ErrorType::ReadError, "origin response abandoned during fill");
                }
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        // pingora seeks only within the content-length it checked the range against; the body
        // may not have arrived that far yet, so the start is not checked against it here.
        self.range = start..end.unwrap_or(usize::MAX).max(start);
        self.read = 0;
        self.offset = 0;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writes one fill; on `finish` the object moves into moka.
struct FillWriter {
    fill: Arc<Fill>,
    key: String,
    tag: U64WriteId,
    size: usize,
    objects: moka::sync::Cache<String, Arc<Stored>>,
    bytes: Arc<AtomicU64>,
    filling: Arc<FillTable>,
    files_open: Arc<AtomicUsize>,
    files_max: usize,
    body_dir: Option<Arc<Path>>,
    page_reads: Arc<AtomicU64>,
    finished: bool,
    /// The complete copy that was stored when this fill began, marked as being replaced
    /// ([`Stored::refills`]) until the fill ends.
    replacing: Option<Arc<Stored>>,
}

impl FillWriter {
    /// Take this fill out of the table, unless a newer fill for the same key replaced it, and
    /// unmark the copy it was replacing.
    fn leave_table(&mut self) {
        if let Ok(mut filling) = self.filling.lock() {
            if filling.get(&self.key).is_some_and(|f| f.id == self.fill.id) {
                filling.remove(&self.key);
            }
        }
        if let Some(old) = self.replacing.take() {
            old.refills.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The body in a file (a memfd, or an unnamed file in the body directory), if it is large
    /// enough and a descriptor may be spent on it.
    fn body_file(&self, chunks: &[Bytes]) -> Option<BodyFile> {
        if self.size < FILE_BODY_MIN || self.files_open.fetch_add(1, Ordering::Relaxed) >= self.files_max {
            if self.size >= FILE_BODY_MIN {
                self.files_open.fetch_sub(1, Ordering::Relaxed);
            }
            return None;
        }
        // From here on the count is released by BodyFile's Drop, or right here on failure.
        let open = self.files_open.clone();
        match crate::pages::body_file(self.body_dir.as_deref(), chunks, self.size) {
            Ok((file, pages)) => {
                Some(BodyFile { file, len: self.size, pages, open, page_reads: self.page_reads.clone() })
            }
            Err(error) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(%error, "edge: keeping a body in memory, no file");
                None
            }
        }
    }
}

#[async_trait]
impl HandleMiss for FillWriter {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        let count = {
            let mut chunks =
                self.fill.chunks.write().map_err(|_| Error::explain(ErrorType::InternalError, "fill poisoned"))?;
            if !data.is_empty() {
                self.size += data.len();
                chunks.push(data);
            }
            chunks.len()
        };
        self.fill.state.send_replace(if eof { FillState::Complete(count) } else { FillState::Partial(count) });
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let body = {
            let chunks =
                self.fill.chunks.read().map_err(|_| Error::explain(ErrorType::InternalError, "fill poisoned"))?;
            self.fill.state.send_replace(FillState::Complete(chunks.len()));
            if let Some(file) = self.body_file(&chunks) {
                Body::File(Arc::new(file))
            } else {
                // One contiguous body: a hit is then one write downstream instead of one per
                // chunk the origin happened to send.
                Body::Memory(match chunks.len() {
                    0 | 1 => chunks.clone().into(),
                    _ => {
                        let mut body = bytes::BytesMut::with_capacity(self.size);
                        for chunk in chunks.iter() {
                            body.extend_from_slice(chunk);
                        }
                        Arc::from([body.freeze()])
                    }
                })
            }
        };
        let head = StoredHead::new(self.fill.meta.clone(), self.size);
        let stored = Stored { meta: RwLock::new(head), body, size: self.size, refills: AtomicUsize::new(0) };
        // Into moka before leaving the fill table, so a lookup in between finds one or the other.
        self.bytes.fetch_add(weight(self.size), Ordering::Relaxed);
        self.objects.insert(self.key.clone(), Arc::new(stored));
        self.leave_table();
        self.finished = true;
        Ok(MissFinishType::Created(self.size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.tag.as_bytes())
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.fill.state.send_replace(FillState::Failed);
            self.leave_table();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + std::time::Duration::from_secs(60), now, 0, 0, header)
    }

    fn leak(storage: MokaStorage) -> &'static MokaStorage {
        Box::leak(Box::new(storage))
    }

    #[test]
    fn object_keys_are_the_combined_keys_pingora_makes() {
        for primary in ["/hls/a/part1.0.m4s", "", "/hls/ch/720p/seg-\u{e9}.m4s"] {
            let key = CacheKey::new(primary, "");
            assert_eq!(ObjectKey::of_primary(primary).as_str(), key.combined());
            assert_eq!(ObjectKey::of(&key).as_str(), key.combined());
            assert_eq!(ObjectKey::of(&key.to_compact()).as_str(), key.combined());
        }
    }

    #[test]
    fn remembered_primary_keys_are_the_keys_hashing_makes() {
        let mut keys = PrimaryKeys::default();
        // More names than slots, so names take each other's slots over; one too long to keep.
        let long = format!("/hls/a/{}.m4s", "x".repeat(PRIMARY_KEY_MAX));
        let names: Vec<String> =
            (0..3 * PRIMARY_KEY_SLOTS).map(|n| format!("/hls/a/part{n}.0.m4s")).chain([long.clone()]).collect();
        for round in 0..2 {
            for name in &names {
                let key = CacheKey::new(name.as_str(), "");
                assert_eq!(keys.get_or_make(name).as_str(), key.combined(), "round {round}: {name}");
            }
        }
        // The newest part again and again, as its viewers ask for it: hashed once.
        let (found, made) = (keys.found, keys.made);
        for _ in 0..10 {
            assert_eq!(
                keys.get_or_make("/hls/a/part9.3.m4s").as_str(),
                CacheKey::new("/hls/a/part9.3.m4s", "").combined()
            );
        }
        assert_eq!((keys.found - found, keys.made - made), (9, 1));
        // The long name is never kept.
        let made = keys.made;
        keys.get_or_make(&long);
        keys.get_or_make(&long);
        assert_eq!(keys.made - made, 2);
    }

    #[tokio::test]
    async fn readers_see_a_fill_while_it_arrives_and_the_object_after() {
        let storage = leak(MokaStorage::new(1 << 20));
        let span = Span::inactive().handle();
        let key = CacheKey::new("/hls/a/part1.0.m4s", "");
        let mut writer = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
        writer.write_body(Bytes::from_static(b"abc"), false).await.unwrap();
        let (_, mut reader) = storage.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(reader.read_body().await.unwrap().unwrap(), "abc");
        // A reader of the fill that seeks gets only its range, across chunks, as they arrive.
        let (_, mut ranged) = storage.lookup(&key, &span).await.unwrap().unwrap();
        ranged.seek(1, Some(5)).unwrap();
        assert_eq!(ranged.read_body().await.unwrap().unwrap(), "bc");
        let ranged = tokio::spawn(async move {
            let next = ranged.read_body().await.unwrap();
            (next, ranged.read_body().await.unwrap())
        });
        let pending = tokio::spawn(async move { reader.read_body().await.unwrap() });
        writer.write_body(Bytes::from_static(b"def"), true).await.unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), "def");
        assert_eq!(ranged.await.unwrap(), (Some(Bytes::from_static(b"de")), None));
        writer.finish().await.unwrap();
        assert_eq!(storage.filling_count(), 0);
        // Stored as one contiguous body.
        let (_, mut hit) = storage.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "abcdef");
        assert!(hit.read_body().await.unwrap().is_none());
        hit.seek(4, None).unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "ef");
        assert!(hit.read_body().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_large_body_moves_into_a_memfd_and_reads_back_whole() {
        let storage = leak(MokaStorage::new(1 << 20));
        let span = Span::inactive().handle();
        let key = CacheKey::new("/hls/a/v/seg2.m4s", "");
        let mut writer = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
        let body: Vec<u8> = (0..FILE_BODY_MIN * 2).map(|i| (i % 251) as u8).collect();
        for chunk in body.chunks(5000) {
            writer.write_body(Bytes::copy_from_slice(chunk), false).await.unwrap();
        }
        writer.write_body(Bytes::new(), true).await.unwrap();
        writer.finish().await.unwrap();
        assert_eq!(storage.file_count(), 1);
        let (_, mut hit) = storage.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), body);
        assert!(hit.read_body().await.unwrap().is_none());
        let fresh = storage.fresh_hit(&key.combined(), SystemTime::now()).unwrap();
        assert!(matches!(&fresh.body, Body::File(f) if f.len == body.len()));
        assert_eq!((fresh.status, fresh.size), (http::StatusCode::OK, body.len()));
        let head = String::from_utf8(fresh.head.to_vec()).unwrap();
        assert!(head.ends_with("x-cache: HIT\r\n") && !head.contains("content-length"), "{head}");
        // pingora's hit path may seek (range requests): it gets just those bytes.
        let (_, mut ranged) = storage.lookup(&key, &span).await.unwrap().unwrap();
        assert!(ranged.can_seek());
        ranged.seek(100, Some(20_100)).unwrap();
        assert_eq!(ranged.read_body().await.unwrap().unwrap(), body[100..20_100]);
        assert!(ranged.read_body().await.unwrap().is_none());
        assert!(ranged.seek(body.len(), None).is_err());
        // Stale objects are left to pingora (stale-if-error, revalidation).
        assert!(storage.fresh_hit(&key.combined(), SystemTime::now() + std::time::Duration::from_secs(120)).is_none());
        // While a newer copy fills, the fill is newer than the stored copy: no fresh hit, and
        // the fill is what a lookup finds. A fill that breaks off leaves the old copy to hits.
        let refill = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
        assert!(storage.fresh_hit(&key.combined(), SystemTime::now()).is_none());
        let (_, mut filling) = storage.lookup(&key, &span).await.unwrap().unwrap();
        drop(refill);
        assert!(filling.read_body().await.is_err(), "a reader of a broken fill gets an error");
        assert!(storage.fresh_hit(&key.combined(), SystemTime::now()).is_some());
        let mut refill = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
        assert!(storage.fresh_hit(&key.combined(), SystemTime::now()).is_none());
        refill.write_body(Bytes::from_static(b"newer"), true).await.unwrap();
        refill.finish().await.unwrap();
        let newer = storage.fresh_hit(&key.combined(), SystemTime::now()).expect("the newer copy, complete");
        assert_eq!(newer.size, 5);
        drop((newer, filling));
        // Evicted: the memfd is closed once no reader holds it.
        drop((fresh, hit, ranged));
        storage.purge(PurgeTarget::Active(&key.to_compact()), PurgeType::Invalidation, &span).await.unwrap();
        storage.run_pending_tasks();
        assert_eq!(storage.file_count(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_fill_is_an_error_for_its_readers_and_not_stored() {
        let storage = leak(MokaStorage::new(1 << 20));
        let span = Span::inactive().handle();
        let key = CacheKey::new("/hls/a/seg1.m4s", "");
        let mut writer = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
        writer.write_body(Bytes::from_static(b"abc"), false).await.unwrap();
        let (_, mut reader) = storage.lookup(&key, &span).await.unwrap().unwrap();
        drop(writer);
        assert!(reader.read_body().await.is_err());
        assert!(storage.lookup(&key, &span).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn eviction_keeps_the_budget_and_never_touches_fills() {
        let storage = leak(MokaStorage::new(64 * 1024));
        let span = Span::inactive().handle();
        // A fill in progress, as for a part viewers wait on.
        let waited = CacheKey::new("/hls/a/v/part9.0.m4s", "");
        let mut waited_writer = storage.get_miss_handler(&waited, &meta(), &span).await.unwrap();
        waited_writer.write_body(Bytes::from(vec![1u8; 10_000]), false).await.unwrap();
        for i in 0..40 {
            let key = CacheKey::new(format!("/hls/a/v/seg{i}.m4s"), "");
            let mut w = storage.get_miss_handler(&key, &meta(), &span).await.unwrap();
            w.write_body(Bytes::from(vec![0u8; 8_000]), true).await.unwrap();
            w.finish().await.unwrap();
        }
        storage.run_pending_tasks();
        assert!(storage.weighted_bytes() <= 64 * 1024, "{}", storage.weighted_bytes());
        assert!(storage.object_count() < 40);
        let (_, mut reader) = storage.lookup(&waited, &span).await.unwrap().unwrap();
        assert_eq!(reader.read_body().await.unwrap().unwrap().len(), 10_000);
        waited_writer.write_body(Bytes::from(vec![2u8; 10]), true).await.unwrap();
        assert_eq!(reader.read_body().await.unwrap().unwrap().len(), 10);
    }
}
