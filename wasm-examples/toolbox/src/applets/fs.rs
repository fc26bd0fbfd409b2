//! Files and directories: `ls cat cp mv rm rmdir mkdir touch`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use super::{Opts, fail, for_each_input};
use crate::ctx::{self, Ctx, err_msg};

/// Names in a directory (not `.`/`..`), plus the preopened mount points directly under
/// it that its listing lacks. Reading `/` may fail when the host preopened no root: then
/// the mount points alone are the listing.
pub fn list_dir(abs: &str) -> io::Result<Vec<String>> {
    let listed = fs::read_dir(abs).and_then(|entries| {
        entries
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            // std skips them already; a recursive walk must never see them, whatever libc does.
            .filter(|name| !matches!(name.as_deref(), Ok("." | "..")))
            .collect::<io::Result<Vec<_>>>()
    });
    let mounts: Vec<String> = ctx::preopens()
        .into_iter()
        .filter_map(|path| {
            let path = ctx::normalize(&path);
            let rest = if abs == "/" { path.strip_prefix('/')? } else { path.strip_prefix(abs)?.strip_prefix('/')? };
            let first = rest.split('/').next()?;
            (!first.is_empty()).then(|| first.to_owned())
        })
        .collect();
    let mut names = match listed {
        Ok(names) => names,
        Err(e) if mounts.is_empty() => return Err(e),
        Err(_) => Vec::new(),
    };
    for mount in mounts {
        if !names.contains(&mount) {
            names.push(mount);
        }
    }
    Ok(names)
}

/// `metadata` that also knows `/` and the mount points, which a host may not stat.
fn stat(abs: &str) -> io::Result<fs::Metadata> {
    fs::symlink_metadata(abs)
}

fn is_dir(abs: &str) -> bool {
    abs == "/" || fs::metadata(abs).is_ok_and(|m| m.is_dir())
}

struct LsOpts {
    long: bool,
    all: bool,
    almost_all: bool,
    one: bool,
    recursive: bool,
    dir_itself: bool,
    human: bool,
    tty: bool,
    /// Terminal width for the column layout (`$COLUMNS`, else 80).
    columns: usize,
}

pub fn ls(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("1alARdhF").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "ls", e, 2),
    };
    let o = LsOpts {
        long: opts.has('l'),
        all: opts.has('a'),
        almost_all: opts.has('A'),
        one: opts.has('1'),
        recursive: opts.has('R'),
        dir_itself: opts.has('d'),
        human: opts.has('h'),
        tty: ctx.tty,
        columns: ctx.var("COLUMNS").and_then(|c| c.parse().ok()).filter(|c| *c > 0).unwrap_or(80),
    };
    let operands = if opts.operands.is_empty() { vec![".".to_owned()] } else { opts.operands.clone() };
    let mut status = 0;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for name in &operands {
        let abs = ctx.abs(name);
        if !o.dir_itself && is_dir(&abs) {
            dirs.push((name.clone(), abs));
            continue;
        }
        match stat(&abs) {
            Ok(meta) => files.push((name.clone(), abs, Some(meta))),
            Err(_) if abs == "/" => files.push((name.clone(), abs, None)),
            Err(e) => {
                let _ = writeln!(err, "ls: {name}: {}", err_msg(&e));
                status = 1;
            }
        }
    }
    print_entries(&o, files, out);
    let headers = dirs.len() > 1 || (!dirs.is_empty() && operands.len() > 1) || o.recursive;
    let mut first = operands.len() == dirs.len();
    let mut queue: Vec<(String, String)> = dirs.into_iter().rev().collect();
    while let Some((name, abs)) = queue.pop() {
        if !first {
            let _ = writeln!(out);
        }
        first = false;
        if headers {
            let _ = writeln!(out, "{name}:");
        }
        let mut names = match list_dir(&abs) {
            Ok(names) => names,
            Err(e) => {
                let _ = writeln!(err, "ls: {name}: {}", err_msg(&e));
                status = 1;
                continue;
            }
        };
        names.retain(|n| o.all || o.almost_all || !n.starts_with('.'));
        names.sort();
        if o.all {
            names.insert(0, "..".into());
            names.insert(0, ".".into());
        }
        let join = |base: &str, n: &str| if base.ends_with('/') { format!("{base}{n}") } else { format!("{base}/{n}") };
        let entries: Vec<(String, String, Option<fs::Metadata>)> =
            names.iter().map(|n| (n.clone(), join(&abs, n), stat(&join(&abs, n)).ok())).collect();
        if o.long {
            let total: u64 = entries.iter().filter_map(|(_, _, m)| m.as_ref()).map(|m| m.len().div_ceil(1024)).sum();
            let _ = writeln!(out, "total {total}");
        }
        if o.recursive {
            let mut sub: Vec<(String, String)> = entries
                .iter()
                .filter(|(n, _, m)| n != "." && n != ".." && m.as_ref().is_some_and(|m| m.is_dir()))
                .map(|(n, a, _)| (join(&name, n), a.clone()))
                .collect();
            sub.reverse();
            queue.extend(sub);
        }
        print_entries(&o, entries, out);
    }
    status
}

fn print_entries(o: &LsOpts, entries: Vec<(String, String, Option<fs::Metadata>)>, out: &mut dyn Write) {
    if entries.is_empty() {
        return;
    }
    if o.long {
        let now = SystemTime::now();
        for (name, abs, meta) in &entries {
            let _ = writeln!(out, "{}", long_line(name, abs, meta.as_ref(), now, o.human));
        }
    } else if o.one || !o.tty {
        for (name, ..) in &entries {
            let _ = writeln!(out, "{name}");
        }
    } else {
        let width = entries.iter().map(|(n, ..)| n.chars().count()).max().unwrap_or(1) + 2;
        let screen = o.columns;
        let columns = (screen / width).max(1);
        let rows = entries.len().div_ceil(columns);
        for row in 0..rows {
            let mut line = String::new();
            for column in 0..columns {
                if let Some((name, ..)) = entries.get(column * rows + row) {
                    line.push_str(&format!("{name:<width$}"));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

fn long_line(name: &str, abs: &str, meta: Option<&fs::Metadata>, now: SystemTime, human: bool) -> String {
    let Some(meta) = meta else {
        return format!("drwxr-xr-x {:>4} root     root     {:>9} {:>12} {name}", 1, 0, "");
    };
    let kind = meta.file_type();
    let mode = if kind.is_symlink() {
        "lrwxrwxrwx"
    } else if kind.is_dir() {
        "drwxr-xr-x"
    } else {
        "-rw-r--r--"
    };
    let size = if human { human_size(meta.len()) } else { meta.len().to_string() };
    let date = meta.modified().map(|t| ls_date(t, now)).unwrap_or_else(|_| "Jan  1  1970".into());
    let mut line = format!("{mode} {:>4} root     root     {size:>9} {date} {name}", 1);
    if kind.is_symlink()
        && let Ok(target) = fs::read_link(abs)
    {
        line.push_str(&format!(" -> {}", target.display()));
    }
    line
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        n.to_string()
    } else if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// `Dec  8 02:35` for the last six months, else `Dec  8  2025`.
fn ls_date(time: SystemTime, now: SystemTime) -> String {
    let secs = crate::applets::misc::unix_secs(time);
    let now_secs = crate::applets::misc::unix_secs(now);
    let t = crate::applets::misc::Tm::from_unix(secs);
    let month = &crate::applets::misc::MONTHS[t.month as usize - 1][..3];
    if (now_secs - secs).abs() < 182 * 86400 {
        format!("{month} {:>2} {:02}:{:02}", t.day, t.hour, t.min)
    } else {
        format!("{month} {:>2}  {}", t.day, t.year)
    }
}

pub fn cat(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "") {
        Ok(opts) => opts,
        Err(e) => return fail(err, "cat", e, 1),
    };
    let mut files = opts.operands.clone();
    if args[1..].iter().any(|a| a == "-") && files.is_empty() {
        files.push("-".into());
    }
    let number = opts.has('n');
    let mut line_no = 0;
    for_each_input(ctx, "cat", &files, stdin, err, |_, input| {
        if !number {
            return io::copy(input, out).map(|_| ());
        }
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        for line in data.split_inclusive(|b| *b == b'\n') {
            line_no += 1;
            write!(out, "{line_no:>6}\t")?;
            out.write_all(line)?;
        }
        Ok(())
    })
}

/// `DEST/basename(src)` when `dest` is a directory, else `dest`.
fn target_path(ctx: &Ctx, src: &str, dest: &str) -> String {
    let dest_abs = ctx.abs(dest);
    if is_dir(&dest_abs) { ctx::normalize(&format!("{dest_abs}/{}", ctx::basename(src))) } else { dest_abs }
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(e),
        }
        for name in list_dir(&src.to_string_lossy())? {
            copy_tree(&src.join(&name), &dst.join(&name))?;
        }
        Ok(())
    } else {
        fs::copy(src, dst).map(|_| ())
    }
}

pub fn cp(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("rRafpdPLnv").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "cp", e, 1),
    };
    let recursive = opts.has('r') || opts.has('R') || opts.has('a');
    let Some((dest, sources)) = opts.operands.split_last().filter(|(_, s)| !s.is_empty()) else {
        return fail(err, "cp", "missing file operand", 1);
    };
    if sources.len() > 1 && !is_dir(&ctx.abs(dest)) {
        return fail(err, "cp", format!("'{dest}' is not a directory"), 1);
    }
    let mut status = 0;
    for src in sources {
        let src_abs = ctx.abs(src);
        let target = target_path(ctx, src, dest);
        let result = match fs::symlink_metadata(&src_abs) {
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() && !recursive => {
                let _ = writeln!(err, "cp: omitting directory '{src}'");
                status = 1;
                continue;
            }
            Ok(_) if src_abs == target => {
                let _ = writeln!(err, "cp: '{src}' and '{dest}' are the same file");
                status = 1;
                continue;
            }
            Ok(_) => copy_tree(Path::new(&src_abs), Path::new(&target)),
        };
        if let Err(e) = result {
            let _ = writeln!(err, "cp: can't copy '{src}': {}", err_msg(&e));
            status = 1;
        }
    }
    status
}

pub fn mv(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("finv").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "mv", e, 1),
    };
    let Some((dest, sources)) = opts.operands.split_last().filter(|(_, s)| !s.is_empty()) else {
        return fail(err, "mv", "missing file operand", 1);
    };
    if sources.len() > 1 && !is_dir(&ctx.abs(dest)) {
        return fail(err, "mv", format!("'{dest}' is not a directory"), 1);
    }
    let mut status = 0;
    for src in sources {
        let src_abs = ctx.abs(src);
        let target = target_path(ctx, src, dest);
        let result = fs::symlink_metadata(&src_abs).and_then(|meta| {
            fs::rename(&src_abs, &target).or_else(|_| {
                // Across preopened directories a rename fails: copy, then remove.
                copy_tree(Path::new(&src_abs), Path::new(&target))?;
                if meta.is_dir() { fs::remove_dir_all(&src_abs) } else { fs::remove_file(&src_abs) }
            })
        });
        if let Err(e) = result {
            let _ = writeln!(err, "mv: can't rename '{src}': {}", err_msg(&e));
            status = 1;
        }
    }
    status
}

pub fn rm(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("rRfiv").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "rm", e, 1),
    };
    let recursive = opts.has('r') || opts.has('R');
    let force = opts.has('f');
    if opts.operands.is_empty() && !force {
        return fail(err, "rm", "missing operand", 1);
    }
    let mut status = 0;
    for name in &opts.operands {
        let abs = ctx.abs(name);
        let result = match fs::symlink_metadata(&abs) {
            Err(e) if force && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() && !recursive => {
                let _ = writeln!(err, "rm: '{name}' is a directory");
                status = 1;
                continue;
            }
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&abs),
            Ok(_) => fs::remove_file(&abs),
        };
        if let Err(e) = result {
            let _ = writeln!(err, "rm: can't remove '{name}': {}", err_msg(&e));
            status = 1;
        }
    }
    status
}

pub fn rmdir(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("p").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "rmdir", e, 1),
    };
    let mut status = 0;
    for name in &opts.operands {
        if let Err(e) = fs::remove_dir(ctx.abs(name)) {
            let _ = writeln!(err, "rmdir: '{name}': {}", err_msg(&e));
            status = 1;
        }
    }
    status
}

pub fn mkdir(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "m").and_then(|o| o.check("pmv").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "mkdir", e, 1),
    };
    if opts.operands.is_empty() {
        return fail(err, "mkdir", "missing operand", 1);
    }
    let mut status = 0;
    for name in &opts.operands {
        let abs = ctx.abs(name);
        let result = if opts.has('p') {
            if is_dir(&abs) { Ok(()) } else { fs::create_dir_all(&abs) }
        } else {
            fs::create_dir(&abs)
        };
        if let Err(e) = result {
            let _ = writeln!(err, "mkdir: can't create directory '{name}': {}", err_msg(&e));
            status = 1;
        }
    }
    status
}

pub fn touch(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "dtr").and_then(|o| o.check("cam").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "touch", e, 1),
    };
    if opts.operands.is_empty() {
        return fail(err, "touch", "missing file operand", 1);
    }
    let mut status = 0;
    for name in &opts.operands {
        let abs = ctx.abs(name);
        let exists = fs::symlink_metadata(&abs).is_ok();
        if !exists && opts.has('c') {
            continue;
        }
        let result = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&abs)
            .and_then(|file| if exists { file.set_modified(SystemTime::now()) } else { Ok(()) })
            // A host that cannot set times still leaves the file existing: good enough.
            .or_else(|e| if e.kind() == io::ErrorKind::Unsupported { Ok(()) } else { Err(e) });
        if let Err(e) = result {
            let _ = writeln!(err, "touch: {name}: {}", err_msg(&e));
            status = 1;
        }
    }
    status
}
