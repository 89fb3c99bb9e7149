// Package folder is the folder source: it watches a folder and its sub-folders and
// hands each settled file to the spool, then releases it (delete, move or keep).
//
// What it owns:
//
//   - Finding files. fsnotify watches the root and every sub-folder (new folders are
//     watched and scanned as they appear), but events are only hints: a full scan at
//     start-up, a periodic rescan (Options.Rescan) and an immediate rescan after a
//     watcher overflow or error find whatever the watcher missed. Without a watcher
//     (it cannot be created, e.g. on some network shares, or Options.NoWatch) the
//     rescans alone do the work.
//   - Settling. A file is taken when its size and mtime, as this process observed
//     them, stayed unchanged for Options.Settle, it can be opened for reading, and no
//     process holds it open for writing (Linux: a read lease, or /proc/*/fd where no
//     lease can be had; Windows: opening it while denying writers). A file that keeps
//     growing keeps waiting; one deleted before it settles is forgotten.
//   - Releasing. Only after spool.ReceiveFile returned (the item is durable) is the
//     file deleted, moved to the move target under its relative path (never
//     overwriting: a taken name gets ".<item id>" before its extension), or kept.
//     Just before, it is checked once more: same size, mtime and identity, and not
//     open for writing. If it changed (a writer that paused longer than settle and
//     went on), it is left in place and taken again once it settles. The spool
//     cannot withdraw the item yet, so that earlier state still goes out as an item
//     of its own; the file's later state is never lost.
//   - Keeping. With after: keep, a fingerprint of path, size, mtime and the file's
//     identity (device and inode and ctime; on Windows volume serial, file index
//     and change time) is recorded with the item, and files whose fingerprint the
//     spool knows are skipped, so neither a rescan nor a restart takes a file twice
//     while a changed file is taken again, even one rewritten to the same size with
//     its old mtime put back. When only the identity or ctime changed (chmod, a copy
//     over itself) the content decides: the same SHA-256 is not taken again (within
//     one run; after a restart the spool records it as a duplicate).
//
// What remains undetectable: a writer that closes the file, pauses longer than
// settle and then opens it again to append (nothing holds it open in between); a
// writer this agent cannot see (another host writing to a network share, another
// user namespace, or on platforms other than Linux and Windows, any writer); and a
// rewrite that keeps path, size, mtime and, where there is none, identity.
//   - Rejecting. Files over max_size, unreadable files, special files (pipes,
//     sockets, devices) and symlinks that resolve outside the watched folder are
//     recorded with spool.Reject (which writes the rejected event) and moved to
//     <root>/.courier-rejected/<relative path> with a <name>.reason.txt. A symlink is
//     moved itself; its target is never read or touched. If the file cannot be moved
//     aside, it is remembered in memory so it is not rejected on every scan, and
//     moving it aside is tried again at each rescan. The same goes for a taken file
//     that could not be deleted or moved yet (a virus scanner holding it).
//
// The watched path itself may be a symlink (/srv/lab -> /mnt/share/lab). Symlinks
// below it are never followed. Those whose target is inside the watched folder are
// ignored: the target is taken under its own name, and following the link would take
// it twice. Hard links cannot be told from ordinary files and are taken like them.
//
// The spool always copies the file's bytes (never a hard link): a name kept, moved,
// or not yet deleted must not share the stored bytes with whoever edits it later.
//
// Skipped: the .courier-rejected folder, the move target when it lies inside the
// root, and files and folders whose base name matches an exclude pattern (by default
// ".*", "*.tmp", "*.part", "~*").
//
// What it must not do: lose a file (any failure other than a rejection leaves the
// file where it is for the next scan), read through a symlink that leads outside the
// root, or log file names, which often carry patient names: logs carry item ids,
// sizes, digests and a short hash of the relative path ("file"); the path itself
// only at debug level.
//
// Spool full (spool.ErrFull) is backpressure: files stay in the folder and are
// offered again every few seconds, logged at most once a minute.
package folder
