//! Archives: `tar` (the `tar` crate for the format, walking and extracting by hand so
//! paths stay inside the sandbox's preopens: `Entry::unpack_in` canonicalizes, which
//! wasip2's std does not support) and `gzip gunzip zcat` (`flate2`, pure Rust).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::fail;
use crate::ctx::{Ctx, err_msg};

#[derive(Default, Debug)]
struct TarOpts {
    mode: Option<char>,
    gzip: bool,
    verbose: bool,
    file: Option<String>,
    dir: Option<String>,
    touch: bool,
    to_stdout: bool,
    strip: usize,
    paths: Vec<String>,
}

/// GNU-style tar arguments: an old-style first bundle without a dash (`xmf -`, whose
/// value-taking letters consume the following arguments in order), dashed bundles
/// (`-xmf -`, `-C DIR`), and the long options `kubectl cp` and people use.
fn tar_args(args: &[String]) -> Result<TarOpts, String> {
    let mut o = TarOpts::default();
    let mut rest: Vec<String> = args[1..].to_vec();
    if let Some(first) = rest.first().filter(|a| !a.starts_with('-')).cloned() {
        rest.remove(0);
        let mut queue: Vec<String> = first.chars().map(|c| format!("-{c}")).collect();
        // Each value-taking letter takes the next argument.
        let mut expanded = Vec::new();
        for flag in queue.drain(..) {
            let takes = matches!(flag.as_str(), "-f" | "-C" | "-X" | "-b" | "-T");
            expanded.push(flag);
            if takes && !rest.is_empty() {
                expanded.push(rest.remove(0));
            }
        }
        expanded.extend(rest);
        rest = expanded;
    }
    let mut i = 0;
    let value = |i: &mut usize, rest: &[String], what: &str| -> Result<String, String> {
        *i += 1;
        rest.get(*i).cloned().ok_or_else(|| format!("option requires an argument -- '{what}'"))
    };
    while i < rest.len() {
        let arg = rest[i].clone();
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            match name {
                "" => {
                    o.paths.extend(rest[i + 1..].iter().cloned());
                    break;
                }
                "create" => o.mode = Some('c'),
                "extract" | "get" => o.mode = Some('x'),
                "list" => o.mode = Some('t'),
                "gzip" | "gunzip" | "ungzip" => o.gzip = true,
                "verbose" => o.verbose = true,
                "touch" => o.touch = true,
                "to-stdout" => o.to_stdout = true,
                "file" => {
                    o.file = Some(match inline {
                        Some(v) => v,
                        None => value(&mut i, &rest, "f")?,
                    })
                }
                "directory" => {
                    o.dir = Some(match inline {
                        Some(v) => v,
                        None => value(&mut i, &rest, "C")?,
                    })
                }
                "strip-components" => {
                    let v = match inline {
                        Some(v) => v,
                        None => value(&mut i, &rest, "strip-components")?,
                    };
                    o.strip = v.parse().map_err(|_| format!("invalid number '{v}'"))?;
                }
                "no-same-permissions"
                | "no-same-owner"
                | "same-owner"
                | "same-permissions"
                | "preserve-permissions"
                | "overwrite"
                | "numeric-owner"
                | "no-overwrite-dir"
                | "warning"
                | "format"
                | "owner"
                | "group"
                | "mode"
                | "mtime"
                | "sort"
                | "no-recursion" => {}
                _ => return Err(format!("unrecognized option '--{name}'")),
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                match c {
                    'c' | 'x' | 't' => o.mode = Some(c),
                    'z' => o.gzip = true,
                    'v' => o.verbose = true,
                    'm' => o.touch = true,
                    'O' => o.to_stdout = true,
                    'o' | 'p' | 'k' | 'h' | 'P' | 'U' | 'w' => {}
                    'f' | 'C' | 'X' | 'T' | 'b' => {
                        let attached: String = chars[j + 1..].iter().collect();
                        let v = if attached.is_empty() { value(&mut i, &rest, &c.to_string())? } else { attached };
                        match c {
                            'f' => o.file = Some(v),
                            'C' => o.dir = Some(v),
                            _ => {}
                        }
                        break;
                    }
                    other => return Err(format!("invalid option -- '{other}'")),
                }
                j += 1;
            }
        } else {
            o.paths.push(arg);
        }
        i += 1;
    }
    Ok(o)
}

pub fn tar(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let o = match tar_args(args) {
        Ok(o) => o,
        Err(e) => return fail(err, "tar", e, 2),
    };
    let base = Ctx {
        cwd: o.dir.as_deref().map_or_else(|| ctx.cwd.clone(), |d| ctx.abs(d)),
        env: ctx.env.clone(),
        tty: false,
        depth: ctx.depth,
    };
    let result = match o.mode {
        Some('c') => create(ctx, &base, &o, out, err),
        Some(mode @ ('x' | 't')) => {
            let input: Box<dyn Read + '_> = match o.file.as_deref() {
                None | Some("-") => Box::new(stdin),
                Some(file) => match fs::File::open(ctx.resolve(file)) {
                    Ok(f) => Box::new(f),
                    Err(e) => return fail(err, "tar", format!("{file}: Cannot open: {}", err_msg(&e)), 2),
                },
            };
            let mut input = BufReader::with_capacity(64 * 1024, input);
            let gzip = o.gzip || input.fill_buf().is_ok_and(|b| b.starts_with(&[0x1f, 0x8b]));
            let reader: Box<dyn Read + '_> = if gzip { Box::new(MultiGzDecoder::new(input)) } else { Box::new(input) };
            extract(&base, &o, mode == 't', reader, out, err)
        }
        _ => return fail(err, "tar", "You must specify one of the '-ctx' options", 2),
    };
    match result {
        Ok(0) => 0,
        Ok(_) => {
            let _ = writeln!(err, "tar: Exiting with failure status due to previous errors");
            2
        }
        Err(e) => fail(err, "tar", err_msg(&e), 2),
    }
}

/// Archives `o.paths` (relative to `base`, the `-C` directory) into `-f` (relative to
/// `ctx`'s cwd, as GNU tar opens it before changing directory).
fn create(ctx: &Ctx, base: &Ctx, o: &TarOpts, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u32> {
    if o.paths.is_empty() {
        let _ = writeln!(err, "tar: Cowardly refusing to create an empty archive");
        return Ok(1);
    }
    let to_stdout = matches!(o.file.as_deref(), None | Some("-"));
    let sink: Box<dyn Write + '_> = if to_stdout {
        Box::new(&mut *out)
    } else {
        let file = o.file.as_deref().unwrap_or("-");
        Box::new(io::BufWriter::new(fs::File::create(ctx.resolve(file))?))
    };
    let sink: Box<dyn Write + '_> = if o.gzip { Box::new(GzEncoder::new(sink, Compression::default())) } else { sink };
    let mut builder = tar::Builder::new(sink);
    builder.follow_symlinks(false);
    let mut failures = 0;
    let mut warned = false;
    let mut listing = Vec::new();
    for path in &o.paths {
        let mut name = path.trim_start_matches('/').to_owned();
        if name.len() != path.len() && !warned {
            let _ = writeln!(err, "tar: Removing leading `/' from member names");
            warned = true;
        }
        if name.is_empty() {
            name = ".".into();
        }
        let abs = base.abs(path);
        if let Err(e) = append(&mut builder, Path::new(&abs), &name, &mut listing) {
            let _ = writeln!(err, "tar: {path}: Cannot stat: {}", err_msg(&e));
            failures += 1;
        }
    }
    let mut sink = builder.into_inner()?;
    sink.flush()?;
    drop(sink);
    if o.verbose {
        let shown: &mut dyn Write = if to_stdout { err } else { out };
        for name in listing {
            let _ = writeln!(shown, "{name}");
        }
    }
    Ok(failures)
}

/// A header written by hand: the `tar` crate's `Header::set_metadata` (behind
/// `append_path`/`append_dir`) is not implemented on wasm32 (it panics there). wasip2
/// has no owners or permission bits, so entries are root's with the usual 0644/0755 modes.
fn header_for(meta: &fs::Metadata, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    header.set_mtime(mtime);
    header
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    abs: &Path,
    name: &str,
    listing: &mut Vec<String>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(abs)?;
    if meta.is_dir() {
        if name != "." {
            let mut header = header_for(&meta, tar::EntryType::Directory, 0o755, 0);
            builder.append_data(&mut header, format!("{name}/"), io::empty())?;
            listing.push(format!("{name}/"));
        }
        let mut children = super::fs::list_dir(&abs.to_string_lossy())?;
        children.sort();
        for child in children {
            let child_name = format!("{}/{child}", name.trim_end_matches('/'));
            append(builder, &abs.join(&child), &child_name, listing)?;
        }
        Ok(())
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(abs)?;
        let mut header = header_for(&meta, tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut header, name, target)?;
        listing.push(name.to_owned());
        Ok(())
    } else {
        let file = fs::File::open(abs)?;
        let size = meta.len();
        let mut header = header_for(&meta, tar::EntryType::Regular, 0o644, size);
        // Exactly `size` bytes, even if the file grows meanwhile (the header says `size`).
        builder.append_data(&mut header, name, file.take(size))?;
        listing.push(name.to_owned());
        Ok(())
    }
}

fn extract(
    base: &Ctx,
    o: &TarOpts,
    list: bool,
    reader: Box<dyn Read + '_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u32> {
    let mut archive = tar::Archive::new(reader);
    let mut failures = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        // Directories listed with a trailing `/`, as GNU tar lists them.
        let mut shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry.header().entry_type().is_dir() && !shown.ends_with('/') {
            shown.push('/');
        }
        if list {
            if o.verbose {
                let header = entry.header();
                let kind = match header.entry_type() {
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    tar::EntryType::Link => 'h',
                    _ => '-',
                };
                let mode = header.mode().unwrap_or(0o644);
                let mut perms = String::new();
                for shift in [6, 3, 0] {
                    let bits = (mode >> shift) & 7;
                    perms.push(if bits & 4 != 0 { 'r' } else { '-' });
                    perms.push(if bits & 2 != 0 { 'w' } else { '-' });
                    perms.push(if bits & 1 != 0 { 'x' } else { '-' });
                }
                let mtime = header.mtime().unwrap_or(0) as i64;
                let owner = header.username().ok().flatten().unwrap_or("root").to_owned();
                let group = header.groupname().ok().flatten().unwrap_or("root").to_owned();
                writeln!(
                    out,
                    "{kind}{perms} {owner}/{group} {:>8} {} {shown}",
                    header.size().unwrap_or(0),
                    crate::applets::misc::strftime("%Y-%m-%d %H:%M", mtime)
                )?;
            } else {
                writeln!(out, "{shown}")?;
            }
            continue;
        }
        // Keep the member inside the target directory: drop `/` and `.`, refuse `..`.
        let mut parts = Vec::new();
        let mut bad = false;
        for component in raw.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::ParentDir => bad = true,
                _ => {}
            }
        }
        if bad {
            let _ = writeln!(err, "tar: {shown}: Member name contains '..'");
            failures += 1;
            continue;
        }
        if parts.len() <= o.strip {
            continue;
        }
        let relative = parts[o.strip..].join("/");
        let dest = base.abs(&relative);
        if o.verbose && !o.to_stdout {
            writeln!(out, "{shown}")?;
        }
        let result = (|| -> io::Result<()> {
            let kind = entry.header().entry_type();
            if o.to_stdout {
                if kind.is_file() {
                    io::copy(&mut entry, out)?;
                }
                return Ok(());
            }
            let mtime = entry.header().mtime().ok();
            match kind {
                tar::EntryType::Directory if !Path::new(&dest).is_dir() => {
                    fs::create_dir_all(&dest)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    if let Some(parent) = Path::new(&dest).parent()
                        && !parent.is_dir()
                    {
                        fs::create_dir_all(parent)?;
                    }
                    if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                        fs::remove_file(&dest)?;
                    }
                    let mut file = fs::File::create(&dest)?;
                    io::copy(&mut entry, &mut file)?;
                    if let (false, Some(mtime)) = (o.touch, mtime) {
                        let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
                    }
                }
                tar::EntryType::Link => {
                    let target = entry.link_name()?.map(|t| t.to_string_lossy().trim_start_matches('/').to_owned());
                    if let Some(target) = target {
                        fs::copy(base.abs(&target), &dest)?;
                    }
                }
                tar::EntryType::Symlink => {
                    let _ = writeln!(err, "tar: {shown}: symlinks are not supported in this sandbox; skipped");
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = writeln!(err, "tar: {shown}: Cannot open: {}", err_msg(&e));
            failures += 1;
        }
    }
    Ok(failures)
}

struct GzOpts {
    decompress: bool,
    stdout: bool,
    keep: bool,
    level: u32,
    files: Vec<String>,
}

fn gzip_main(
    ctx: &Ctx,
    applet: &str,
    o: GzOpts,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let level = Compression::new(o.level);
    if o.files.is_empty() || o.files.iter().all(|f| f == "-") {
        let result = if o.decompress {
            io::copy(&mut MultiGzDecoder::new(BufReader::new(stdin)), out).map(|_| ())
        } else {
            let mut encoder = GzEncoder::new(out, level);
            io::copy(stdin, &mut encoder).and_then(|_| encoder.finish()).map(|_| ())
        };
        return match result {
            Ok(()) => 0,
            Err(e) => fail(err, applet, err_msg(&e).to_string(), 1),
        };
    }
    let mut status = 0;
    for name in &o.files {
        let abs = ctx.abs(name);
        let result = (|| -> Result<(), String> {
            let target = if o.decompress {
                let stem = name
                    .strip_suffix(".gz")
                    .map(str::to_owned)
                    .or_else(|| name.strip_suffix(".tgz").map(|s| format!("{s}.tar")));
                match stem {
                    Some(stem) => Some(ctx.abs(&stem)),
                    None if o.stdout => None,
                    None => return Err(format!("{name}: unknown suffix -- ignored")),
                }
            } else if name.ends_with(".gz") && !o.stdout {
                return Err(format!("{name} already has .gz suffix -- unchanged"));
            } else {
                Some(format!("{abs}.gz"))
            };
            let input = fs::File::open(&abs).map_err(|e| format!("{name}: {}", err_msg(&e)))?;
            if input.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(format!("{name} is a directory -- ignored"));
            }
            let mut input = BufReader::new(input);
            let mut sink: Box<dyn Write + '_> = match (&target, o.stdout) {
                (Some(target), false) => Box::new(io::BufWriter::new(
                    fs::File::create(target).map_err(|e| format!("{target}: {}", err_msg(&e)))?,
                )),
                _ => Box::new(&mut *out),
            };
            let result = if o.decompress {
                io::copy(&mut MultiGzDecoder::new(input), &mut sink).map(|_| ())
            } else {
                let mut encoder = GzEncoder::new(&mut sink, level);
                io::copy(&mut input, &mut encoder).and_then(|_| encoder.finish()).map(|_| ())
            };
            result.and_then(|()| sink.flush()).map_err(|e| format!("{name}: {}", err_msg(&e)))?;
            if !o.stdout && !o.keep {
                fs::remove_file(&abs).map_err(|e| format!("{name}: {}", err_msg(&e)))?;
            }
            Ok(())
        })();
        if let Err(message) = result {
            let _ = writeln!(err, "{applet}: {message}");
            status = 1;
        }
    }
    status
}

fn gz_opts(args: &[String], decompress: bool, stdout: bool) -> Result<GzOpts, String> {
    let mut o = GzOpts { decompress, stdout, keep: false, level: 6, files: Vec::new() };
    for arg in &args[1..] {
        if arg.len() > 1 && arg.starts_with('-') && !arg.starts_with("--") {
            for c in arg[1..].chars() {
                match c {
                    'd' => o.decompress = true,
                    'c' => o.stdout = true,
                    'k' => o.keep = true,
                    'f' | 'n' | 'N' | 'q' | 'v' => {}
                    d if d.is_ascii_digit() => o.level = d.to_digit(10).unwrap_or(6).clamp(1, 9),
                    other => return Err(format!("invalid option -- '{other}'")),
                }
            }
        } else if arg == "--stdout" {
            o.stdout = true;
        } else if arg == "--decompress" {
            o.decompress = true;
        } else if arg == "--keep" {
            o.keep = true;
        } else {
            o.files.push(arg.clone());
        }
    }
    Ok(o)
}

pub fn gzip(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match gz_opts(args, false, false) {
        Ok(o) => gzip_main(ctx, "gzip", o, stdin, out, err),
        Err(e) => fail(err, "gzip", e, 1),
    }
}

pub fn gunzip(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match gz_opts(args, true, false) {
        Ok(o) => gzip_main(ctx, "gunzip", o, stdin, out, err),
        Err(e) => fail(err, "gunzip", e, 1),
    }
}

pub fn zcat(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match gz_opts(args, true, true) {
        Ok(o) => gzip_main(ctx, "zcat", o, stdin, out, err),
        Err(e) => fail(err, "zcat", e, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn kubectl_cp_argv() {
        let o = tar_args(&argv("tar -xmf - -C /tmp/dest")).unwrap();
        assert_eq!(
            (o.mode, o.touch, o.file.as_deref(), o.dir.as_deref()),
            (Some('x'), true, Some("-"), Some("/tmp/dest"))
        );
        let o = tar_args(&argv("tar --no-same-permissions --no-same-owner -xmf - -C /d")).unwrap();
        assert_eq!((o.mode, o.file.as_deref(), o.dir.as_deref()), (Some('x'), Some("-"), Some("/d")));
        let o = tar_args(&argv("tar cf - /tmp/foo")).unwrap();
        assert_eq!((o.mode, o.file.as_deref(), o.paths.clone()), (Some('c'), Some("-"), vec!["/tmp/foo".to_owned()]));
        let o = tar_args(&argv("tar xmf - -C /d")).unwrap();
        assert_eq!((o.mode, o.touch, o.file.as_deref(), o.dir.as_deref()), (Some('x'), true, Some("-"), Some("/d")));
        let o = tar_args(&argv("tar czvf out.tgz -C /src a b")).unwrap();
        assert!(o.gzip && o.verbose);
        assert_eq!(o.paths, vec!["a".to_owned(), "b".to_owned()]);
        assert!(tar_args(&argv("tar --bogus")).is_err());
    }
}
