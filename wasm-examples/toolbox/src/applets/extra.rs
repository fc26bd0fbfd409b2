//! Beyond the required set, the ones `kubectl exec` one-liners reach for next: `tee tr
//! cut find du xargs`.

use std::fs;
use std::io::{self, Read, Write};

use super::{Opts, fail, for_each_input};
use crate::ctx::{self, Ctx, err_msg};
use crate::sh::glob;

pub fn tee(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("ai").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "tee", e, 1),
    };
    let mut status = 0;
    let mut files = Vec::new();
    for name in &opts.operands {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(opts.has('a'))
            .truncate(!opts.has('a'))
            .open(ctx.resolve(name));
        match file {
            Ok(file) => files.push(file),
            Err(e) => {
                let _ = writeln!(err, "tee: {name}: {}", err_msg(&e));
                status = 1;
            }
        }
    }
    let mut buf = [0u8; 16384];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(err, "tee", err_msg(&e), 1),
        };
        let _ = out.write_all(&buf[..n]);
        for file in &mut files {
            if file.write_all(&buf[..n]).is_err() {
                status = 1;
            }
        }
    }
    status
}

/// A `tr` set: `a-z`, `\n`-style escapes and `[:alpha:]`-style classes, expanded.
fn tr_set(spec: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let raw = spec.as_bytes();
    let mut i = 0;
    let mut chars = Vec::new();
    while i < raw.len() {
        if raw[i..].starts_with(b"[:")
            && let Some(end) = spec[i..].find(":]")
        {
            let class = &spec[i + 2..i + end];
            let members: Vec<u8> = (0u8..=127)
                .filter(|b| match class {
                    "alpha" => b.is_ascii_alphabetic(),
                    "digit" => b.is_ascii_digit(),
                    "alnum" => b.is_ascii_alphanumeric(),
                    "upper" => b.is_ascii_uppercase(),
                    "lower" => b.is_ascii_lowercase(),
                    "space" => b.is_ascii_whitespace() || *b == 11,
                    "blank" => *b == b' ' || *b == b'\t',
                    "punct" => b.is_ascii_punctuation(),
                    "print" => (32..127).contains(b),
                    "cntrl" => b.is_ascii_control(),
                    "xdigit" => b.is_ascii_hexdigit(),
                    _ => false,
                })
                .collect();
            chars.extend(members.into_iter().map(|b| (b, false)));
            i += end + 2;
            continue;
        }
        if raw[i] == b'\\' && i + 1 < raw.len() {
            let c = match raw[i + 1] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'\\' => b'\\',
                other => other,
            };
            chars.push((c, true));
            i += 2;
            continue;
        }
        chars.push((raw[i], false));
        i += 1;
    }
    let mut j = 0;
    while j < chars.len() {
        if j + 2 < chars.len() && chars[j + 1] == (b'-', false) && chars[j].0 <= chars[j + 2].0 {
            bytes.extend(chars[j].0..=chars[j + 2].0);
            j += 3;
        } else {
            bytes.push(chars[j].0);
            j += 1;
        }
    }
    bytes
}

pub fn tr(_ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("dscC").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "tr", e, 1),
    };
    let (delete, squeeze, complement) = (opts.has('d'), opts.has('s'), opts.has('c') || opts.has('C'));
    let Some(first) = opts.operands.first() else {
        return fail(err, "tr", "missing operand", 1);
    };
    let mut set1 = tr_set(first);
    if complement {
        set1 = (0u8..=255).filter(|b| !set1.contains(b)).collect();
    }
    let set2 = opts.operands.get(1).map(|s| tr_set(s)).unwrap_or_default();
    if !delete && set2.is_empty() && !squeeze {
        return fail(err, "tr", "missing operand after set 1", 1);
    }
    let mut map: [Option<u8>; 256] = [None; 256];
    let mut in_set1 = [false; 256];
    for (n, b) in set1.iter().enumerate() {
        in_set1[*b as usize] = true;
        if !delete {
            map[*b as usize] = set2.get(n).or(set2.last()).copied();
        }
    }
    let squeeze_set: Vec<u8> =
        if delete || set2.is_empty() { if delete { set2.clone() } else { set1.clone() } } else { set2.clone() };
    let mut data = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut data) {
        return fail(err, "tr", err_msg(&e), 1);
    }
    let mut output = Vec::with_capacity(data.len());
    for b in data {
        let mapped = if delete && in_set1[b as usize] {
            continue;
        } else {
            map[b as usize].unwrap_or(b)
        };
        if squeeze && output.last() == Some(&mapped) && squeeze_set.contains(&mapped) {
            continue;
        }
        output.push(mapped);
    }
    i32::from(out.write_all(&output).is_err())
}

/// `1,3-5,7-`: which 1-based positions to keep.
fn ranges(list: &str) -> Option<Vec<(usize, usize)>> {
    list.split(',')
        .map(|part| {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (
                    if lo.is_empty() { 1 } else { lo.parse().ok()? },
                    if hi.is_empty() { usize::MAX } else { hi.parse().ok()? },
                ),
                None => {
                    let n = part.parse().ok()?;
                    (n, n)
                }
            };
            (lo >= 1 && lo <= hi).then_some((lo, hi))
        })
        .collect()
}

pub fn cut(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "dfcb").and_then(|o| o.check("dfcbs").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "cut", e, 1),
    };
    let delim = opts.value('d').map_or("\t".to_owned(), |d| d.chars().next().map(String::from).unwrap_or("\t".into()));
    let (list, by_field) = match (opts.value('f'), opts.value('c').or(opts.value('b'))) {
        (Some(f), _) => (f, true),
        (None, Some(c)) => (c, false),
        _ => return fail(err, "cut", "you must specify a list of bytes, characters, or fields", 1),
    };
    let Some(keep) = ranges(list) else {
        return fail(err, "cut", format!("invalid list '{list}'"), 1);
    };
    let wanted = |n: usize| keep.iter().any(|(lo, hi)| *lo <= n && n <= *hi);
    for_each_input(ctx, "cut", &opts.operands, stdin, err, |_, input| {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        let text = String::from_utf8_lossy(&data);
        for line in text.lines() {
            let result = if by_field {
                if !line.contains(delim.as_str()) {
                    if opts.has('s') {
                        continue;
                    }
                    line.to_owned()
                } else {
                    line.split(delim.as_str())
                        .enumerate()
                        .filter(|(n, _)| wanted(n + 1))
                        .map(|(_, f)| f)
                        .collect::<Vec<_>>()
                        .join(&delim)
                }
            } else {
                line.chars().enumerate().filter(|(n, _)| wanted(n + 1)).map(|(_, c)| c).collect()
            };
            writeln!(out, "{result}")?;
        }
        Ok(())
    })
}

struct FindOpts {
    name: Option<(String, bool)>,
    kind: Option<char>,
    max_depth: usize,
    min_depth: usize,
}

pub fn find(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut roots = Vec::new();
    let mut i = 1;
    while i < args.len() && !args[i].starts_with('-') {
        roots.push(args[i].clone());
        i += 1;
    }
    if roots.is_empty() {
        roots.push(".".into());
    }
    let mut o = FindOpts { name: None, kind: None, max_depth: usize::MAX, min_depth: 0 };
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        let Some(value) = value.filter(|_| args[i] != "-print") else {
            if args[i] == "-print" {
                i += 1;
                continue;
            }
            return fail(err, "find", format!("missing argument to '{}'", args[i]), 1);
        };
        match args[i].as_str() {
            "-name" => o.name = Some((value, false)),
            "-iname" => o.name = Some((value.to_lowercase(), true)),
            "-type" => o.kind = value.chars().next(),
            "-maxdepth" | "-mindepth" => {
                let Ok(n) = value.parse() else { return fail(err, "find", format!("invalid number '{value}'"), 1) };
                if args[i] == "-maxdepth" { o.max_depth = n } else { o.min_depth = n }
            }
            other => return fail(err, "find", format!("unrecognized: {other}"), 1),
        }
        i += 2;
    }
    let mut status = 0;
    for root in &roots {
        let abs = ctx.abs(root);
        if abs != "/" && fs::symlink_metadata(&abs).is_err() {
            let _ = writeln!(err, "find: {root}: No such file or directory");
            status = 1;
            continue;
        }
        if walk(&o, root, &abs, 0, out, err).is_err() {
            return status;
        }
    }
    status
}

fn walk(
    o: &FindOpts,
    shown: &str,
    abs: &str,
    depth: usize,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(abs).ok();
    let is_dir = abs == "/" || meta.as_ref().is_some_and(|m| m.is_dir());
    let kind_ok = match o.kind {
        Some('d') => is_dir,
        Some('f') => meta.as_ref().is_some_and(|m| m.is_file()),
        Some('l') => meta.as_ref().is_some_and(|m| m.file_type().is_symlink()),
        _ => true,
    };
    let name_ok = match &o.name {
        Some((pattern, fold)) => {
            let base = ctx::basename(shown);
            if *fold { glob::matches(pattern, &base.to_lowercase()) } else { glob::matches(pattern, base) }
        }
        None => true,
    };
    if depth >= o.min_depth && kind_ok && name_ok {
        writeln!(out, "{shown}")?;
    }
    if is_dir && depth < o.max_depth {
        let mut names = match super::fs::list_dir(abs) {
            Ok(names) => names,
            Err(e) => {
                let _ = writeln!(err, "find: {shown}: {}", err_msg(&e));
                return Ok(());
            }
        };
        names.sort();
        for name in names {
            let child_shown = if shown.ends_with('/') { format!("{shown}{name}") } else { format!("{shown}/{name}") };
            let child_abs = if abs.ends_with('/') { format!("{abs}{name}") } else { format!("{abs}/{name}") };
            walk(o, &child_shown, &child_abs, depth + 1, out, err)?;
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        bytes.to_string()
    } else if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

pub fn du(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "d").and_then(|o| o.check("shakcd").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "du", e, 1),
    };
    let max_depth = if opts.has('s') { Some(0) } else { opts.value('d').and_then(|d| d.parse().ok()) };
    let show = |size: u64| if opts.has('h') { human(size) } else { size.div_ceil(1024).to_string() };
    let roots = if opts.operands.is_empty() { vec![".".to_owned()] } else { opts.operands.clone() };
    let mut status = 0;
    let mut total = 0;
    for root in &roots {
        let mut lines = Vec::new();
        match du_walk(&ctx.abs(root), root, 0, max_depth, opts.has('a'), &mut lines) {
            Ok(size) => {
                total += size;
                for (size, name) in lines {
                    let _ = writeln!(out, "{}\t{name}", show(size));
                }
            }
            Err(e) => {
                let _ = writeln!(err, "du: {root}: {}", err_msg(&e));
                status = 1;
            }
        }
    }
    if opts.has('c') {
        let _ = writeln!(out, "{}\ttotal", show(total));
    }
    status
}

fn du_walk(
    abs: &str,
    shown: &str,
    depth: usize,
    max: Option<usize>,
    all: bool,
    lines: &mut Vec<(u64, String)>,
) -> io::Result<u64> {
    let meta = fs::symlink_metadata(abs);
    let is_dir = abs == "/" || meta.as_ref().is_ok_and(|m| m.is_dir());
    if !is_dir {
        let size = meta?.len();
        if depth == 0 || (all && max.is_none_or(|m| depth <= m)) {
            lines.push((size, shown.to_owned()));
        }
        return Ok(size);
    }
    let mut size = 0;
    let mut names = super::fs::list_dir(abs)?;
    names.sort();
    for name in names {
        let child_shown = if shown.ends_with('/') { format!("{shown}{name}") } else { format!("{shown}/{name}") };
        let child_abs = if abs.ends_with('/') { format!("{abs}{name}") } else { format!("{abs}/{name}") };
        size += du_walk(&child_abs, &child_shown, depth + 1, max, all, lines).unwrap_or(0);
    }
    if max.is_none_or(|m| depth <= m) {
        lines.push((size, shown.to_owned()));
    }
    Ok(size)
}

/// `xargs [-n N] [CMD [ARG]...]`: runs the applet (default `echo`) with the words read
/// from stdin appended, N at a time.
pub fn xargs(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut i = 1;
    let mut per_call = usize::MAX;
    let mut no_empty = false;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-n" => {
                i += 1;
                match args.get(i).and_then(|n| n.parse().ok()).filter(|n| *n > 0) {
                    Some(n) => per_call = n,
                    None => return fail(err, "xargs", "invalid number for -n", 1),
                }
            }
            "-r" | "--no-run-if-empty" => no_empty = true,
            a if a.starts_with("-n") => match a[2..].parse().ok().filter(|n| *n > 0) {
                Some(n) => per_call = n,
                None => return fail(err, "xargs", "invalid number for -n", 1),
            },
            _ => break,
        }
        i += 1;
    }
    let command: Vec<String> = if i < args.len() { args[i..].to_vec() } else { vec!["echo".to_owned()] };
    let name = ctx::basename(&command[0]).to_owned();
    let Some(entry) = super::find(&name) else {
        return fail(err, "xargs", format!("{}: No such file or directory", command[0]), 127);
    };
    let mut data = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut data) {
        return fail(err, "xargs", err_msg(&e), 1);
    }
    let text = String::from_utf8_lossy(&data);
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if words.is_empty() && no_empty {
        return 0;
    }
    let mut status = 0;
    let chunks: Vec<&[String]> =
        if words.is_empty() { vec![&[][..]] } else { words.chunks(per_call.min(words.len())).collect() };
    for chunk in chunks {
        let mut argv = command.clone();
        argv[0] = name.clone();
        argv.extend(chunk.iter().cloned());
        let mut child = ctx.clone();
        let code = entry.run(&mut child, &argv, &mut io::empty(), out, err);
        if code != 0 {
            status = 123;
        }
    }
    status
}
