//! Text: `echo printf head tail grep wc sort uniq seq`.

use std::io::{self, Read, Write};

use super::{Opts, fail, for_each_input};
use crate::ctx::{Ctx, err_msg};

/// Backslash escapes of `echo -e` and `printf`'s format (`\c` stops the output: the
/// flag returned is false then).
fn unescape(text: &str, out: &mut Vec<u8>) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('a') => out.push(7),
            Some('b') => out.push(8),
            Some('f') => out.push(12),
            Some('v') => out.push(11),
            Some('e') => out.push(27),
            Some('\\') => out.push(b'\\'),
            Some('c') => return false,
            Some('0') => {
                let mut value = 0u32;
                for _ in 0..3 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(value as u8);
            }
            // `\NNN`: one to three octal digits (`\377` is the byte 255).
            Some(first @ '1'..='7') => {
                let mut value = first.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(value as u8);
            }
            Some('x') => {
                let mut value = 0u32;
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(value as u8);
            }
            Some(other) => {
                out.push(b'\\');
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    true
}

pub fn echo(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, _err: &mut dyn Write) -> i32 {
    let mut newline = true;
    let mut escapes = false;
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg.len() > 1 && arg.starts_with('-') && arg[1..].chars().all(|c| "neE".contains(c)) {
            for c in arg[1..].chars() {
                match c {
                    'n' => newline = false,
                    'e' => escapes = true,
                    _ => escapes = false,
                }
            }
            i += 1;
        } else {
            break;
        }
    }
    let text = args[i..].join(" ");
    let mut bytes = Vec::new();
    if escapes {
        if !unescape(&text, &mut bytes) {
            newline = false;
        }
    } else {
        bytes.extend_from_slice(text.as_bytes());
    }
    if newline {
        bytes.push(b'\n');
    }
    i32::from(out.write_all(&bytes).is_err())
}

pub fn printf(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(format) = args.get(1) else {
        return fail(err, "printf", "usage: printf FORMAT [ARGUMENT]...", 1);
    };
    let mut rest = args[2..].iter();
    let mut output = Vec::new();
    let mut status = 0;
    loop {
        let mut consumed = false;
        let chars: Vec<char> = format.chars().collect();
        let mut i = 0;
        let mut literal = String::new();
        while i < chars.len() {
            if chars[i] != '%' {
                literal.push(chars[i]);
                i += 1;
                continue;
            }
            if chars.get(i + 1) == Some(&'%') {
                literal.push('%');
                i += 2;
                continue;
            }
            if !unescape(&std::mem::take(&mut literal), &mut output) {
                let _ = out.write_all(&output);
                return status;
            }
            let start = i;
            i += 1;
            while i < chars.len() && "-+ #0123456789.*".contains(chars[i]) {
                i += 1;
            }
            let Some(&conv) = chars.get(i) else {
                literal.extend(&chars[start..]);
                break;
            };
            i += 1;
            let mut spec: String = chars[start + 1..i - 1].iter().collect();
            while let Some(at) = spec.find('*') {
                consumed = true;
                let n = rest.next().map(String::as_str).unwrap_or("0");
                spec.replace_range(at..at + 1, n);
            }
            let arg = rest.next();
            consumed |= arg.is_some();
            let arg = arg.map(String::as_str).unwrap_or("");
            let (left, zero, plus, width, precision) = parse_spec(&spec);
            let body = match conv {
                's' => {
                    let s: String = match precision {
                        Some(p) => arg.chars().take(p).collect(),
                        None => arg.to_owned(),
                    };
                    s
                }
                'b' => {
                    let mut bytes = Vec::new();
                    unescape(arg, &mut bytes);
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                'c' => arg.chars().next().map(String::from).unwrap_or_default(),
                'd' | 'i' | 'u' | 'x' | 'X' | 'o' => {
                    let value = match parse_int(arg) {
                        Some(v) => v,
                        None => {
                            let _ = writeln!(err, "printf: invalid number '{arg}'");
                            status = 1;
                            0
                        }
                    };
                    let digits = match conv {
                        'x' => format!("{value:x}"),
                        'X' => format!("{value:X}"),
                        'o' => format!("{value:o}"),
                        _ => value.unsigned_abs().to_string(),
                    };
                    let sign = if value < 0 && matches!(conv, 'd' | 'i' | 'u') {
                        "-"
                    } else if plus {
                        "+"
                    } else {
                        ""
                    };
                    let digits = match precision {
                        Some(p) if digits.len() < p => format!("{}{digits}", "0".repeat(p - digits.len())),
                        _ => digits,
                    };
                    if zero && !left && sign.len() + digits.len() < width {
                        format!("{sign}{}{digits}", "0".repeat(width - sign.len() - digits.len()))
                    } else {
                        format!("{sign}{digits}")
                    }
                }
                'f' | 'F' | 'e' | 'g' | 'G' | 'E' => {
                    let value: f64 = arg.trim().parse().unwrap_or_else(|_| {
                        if !arg.is_empty() {
                            let _ = writeln!(err, "printf: invalid number '{arg}'");
                            status = 1;
                        }
                        0.0
                    });
                    let p = precision.unwrap_or(6);
                    let text = match conv {
                        'e' | 'E' => format!("{value:.p$e}"),
                        'g' | 'G' => {
                            let text = format!("{value}");
                            text
                        }
                        _ => format!("{value:.p$}"),
                    };
                    let text = if plus && value >= 0.0 { format!("+{text}") } else { text };
                    if zero && !left && text.len() < width {
                        format!("{}{text}", "0".repeat(width - text.len()))
                    } else {
                        text
                    }
                }
                other => {
                    let _ = writeln!(err, "printf: %{other}: invalid format");
                    return 1;
                }
            };
            let padded = if body.chars().count() >= width {
                body
            } else if left {
                format!("{body:<width$}")
            } else {
                format!("{body:>width$}")
            };
            output.extend_from_slice(padded.as_bytes());
        }
        if !unescape(&literal, &mut output) {
            break;
        }
        if !consumed || rest.len() == 0 {
            break;
        }
    }
    if out.write_all(&output).is_err() {
        return 1;
    }
    status
}

fn parse_spec(spec: &str) -> (bool, bool, bool, usize, Option<usize>) {
    let flags_end = spec.find(|c: char| !"-+ #0".contains(c)).unwrap_or(spec.len());
    let flags = &spec[..flags_end];
    let rest = &spec[flags_end..];
    let (width, precision) = match rest.split_once('.') {
        Some((w, p)) => (w.parse().unwrap_or(0), Some(p.parse().unwrap_or(0))),
        None => (rest.parse().unwrap_or(0), None),
    };
    (
        flags.contains('-'),
        flags.contains('0'),
        flags.contains('+'),
        width.min(4096),
        precision.map(|p: usize| p.min(4096)),
    )
}

fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    if let Some(c) = text.strip_prefix('\'').or_else(|| text.strip_prefix('"')) {
        return c.chars().next().map(|c| c as i64);
    }
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -value } else { value })
}

/// `-n N`, `-N`, `-c N` (a leading `+` counts from the start): (lines?, count, from_start).
fn head_tail_opts(applet: &str, args: &[String]) -> Result<(bool, u64, bool, Vec<String>), String> {
    // `-5` is `-n 5`.
    let args: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| c.is_ascii_digit()) {
                format!("-n{}", &a[1..])
            } else {
                a.clone()
            }
        })
        .collect();
    let opts = Opts::parse(&args, "nc")?;
    opts.check("ncqvf")?;
    let (lines, value) = match opts.flags.iter().rev().find(|(f, _)| *f == 'n' || *f == 'c') {
        Some(('c', Some(v))) => (false, v.clone()),
        Some((_, Some(v))) => (true, v.clone()),
        _ => (true, "10".into()),
    };
    let from_start = value.starts_with('+');
    let digits = value.trim_start_matches(['+', '-']);
    let (digits, mult) = match digits.char_indices().last() {
        Some((at, 'k')) => (&digits[..at], 1024),
        Some((at, 'm')) => (&digits[..at], 1 << 20),
        Some((at, 'b')) => (&digits[..at], 512),
        _ => (digits, 1),
    };
    let count: u64 = digits.parse().map_err(|_| format!("invalid number '{value}'"))?;
    let _ = applet;
    Ok((lines, count * mult, from_start, opts.operands))
}

pub fn head(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (lines, count, _, files) = match head_tail_opts("head", args) {
        Ok(v) => v,
        Err(e) => return fail(err, "head", e, 1),
    };
    let many = files.len() > 1;
    let mut first = true;
    for_each_input(ctx, "head", &files, stdin, err, |name, input| {
        if many {
            writeln!(
                out,
                "{}==> {} <==",
                if first { "" } else { "\n" },
                if name == "-" { "standard input" } else { name }
            )?;
        }
        first = false;
        if !lines {
            io::copy(&mut input.take(count), out)?;
            return Ok(());
        }
        let mut remaining = count;
        let mut buf = [0u8; 8192];
        let mut pending = Vec::new();
        while remaining > 0 {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                pending.push(b);
                if b == b'\n' {
                    remaining -= 1;
                    if remaining == 0 {
                        break;
                    }
                }
            }
            out.write_all(&pending)?;
            pending.clear();
        }
        out.write_all(&pending)
    })
}

pub fn tail(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (lines, count, from_start, files) = match head_tail_opts("tail", args) {
        Ok(v) => v,
        Err(e) => return fail(err, "tail", e, 1),
    };
    let many = files.len() > 1;
    let mut first = true;
    for_each_input(ctx, "tail", &files, stdin, err, |name, input| {
        if many {
            writeln!(
                out,
                "{}==> {} <==",
                if first { "" } else { "\n" },
                if name == "-" { "standard input" } else { name }
            )?;
        }
        first = false;
        if from_start && !lines {
            // `tail -c +N`: from byte N (1-based; +0 is +1), streamed (what `kubectl cp` runs).
            io::copy(&mut input.take(count.saturating_sub(1)), &mut io::sink())?;
            io::copy(input, out)?;
            return Ok(());
        }
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        let start = if !lines {
            data.len().saturating_sub(count as usize)
        } else if from_start {
            let skip = count.saturating_sub(1) as usize;
            data.split_inclusive(|b| *b == b'\n').take(skip).map(<[u8]>::len).sum()
        } else {
            let body = data.strip_suffix(b"\n").unwrap_or(&data);
            let mut start = body.len();
            let mut seen = 0;
            if count == 0 {
                data.len()
            } else {
                while start > 0 {
                    if body[start - 1] == b'\n' {
                        seen += 1;
                        if seen == count {
                            break;
                        }
                    }
                    start -= 1;
                }
                start
            }
        };
        out.write_all(&data[start.min(data.len())..])
    })
}

/// A basic regular expression (grep without `-E`) in `regex` syntax: `\( \) \{ \} \| \+
/// \?` are the operators, their bare forms literal.
fn bre_to_ere(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if in_class {
            if c == ']' {
                in_class = false;
            }
            if c == '\\' || (c == '[' && chars.peek() != Some(&':')) {
                out.push('\\');
            }
            out.push(c);
            continue;
        }
        match c {
            '\\' => match chars.next() {
                Some(op @ ('(' | ')' | '{' | '}' | '|' | '+' | '?')) => out.push(op),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push_str("\\\\"),
            },
            '(' | ')' | '{' | '}' | '|' | '+' | '?' => {
                out.push('\\');
                out.push(c);
            }
            '[' => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push_str("\\]");
                }
            }
            '*' if out.is_empty() || out.ends_with('(') || out.ends_with('|') => out.push_str("\\*"),
            _ => out.push(c),
        }
    }
    out
}

pub fn grep(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "ef").and_then(|o| o.check("ivncrRlLqswhHEFoe f").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "grep", e, 2),
    };
    let mut patterns: Vec<String> =
        opts.flags.iter().filter(|(f, _)| *f == 'e').filter_map(|(_, v)| v.clone()).collect();
    if let Some(file) = opts.value('f') {
        match std::fs::read_to_string(ctx.resolve(file)) {
            Ok(text) => patterns.extend(text.lines().map(str::to_owned)),
            Err(e) => return fail(err, "grep", format!("{file}: {}", err_msg(&e)), 2),
        }
    }
    let mut files = opts.operands.clone();
    if patterns.is_empty() {
        if files.is_empty() {
            return fail(err, "grep", "usage: grep [-ivncrlqwhHEF] [-e PATTERN]... [PATTERN] [FILE]...", 2);
        }
        patterns.push(files.remove(0));
    }
    let recursive = opts.has('r') || opts.has('R');
    let pieces: Vec<String> = patterns
        .iter()
        .flat_map(|p| p.split('\n').map(str::to_owned).collect::<Vec<_>>())
        .map(|p| {
            if opts.has('F') {
                regex::escape(&p)
            } else if opts.has('E') {
                p
            } else {
                bre_to_ere(&p)
            }
        })
        .map(|p| if opts.has('w') { format!(r"\b(?:{p})\b") } else { p })
        .collect();
    let pattern = format!("{}(?:{})", if opts.has('i') { "(?i)" } else { "" }, pieces.join("|"));
    // Byte-oriented, like grep in the C locale: no Unicode tables in the artifact, `\\w`
    // and `-i` are ASCII, non-ASCII literals still match their UTF-8 bytes.
    let re = match regex::bytes::RegexBuilder::new(&pattern).unicode(false).size_limit(1 << 24).build() {
        Ok(re) => re,
        Err(e) => return fail(err, "grep", format!("bad regex '{}': {e}", patterns.join("|")), 2),
    };
    if recursive {
        if files.is_empty() {
            files.push(".".into());
        }
        let mut expanded = Vec::new();
        for file in &files {
            walk(ctx, file, &mut expanded);
        }
        files = expanded;
    }
    let show_names = (files.len() > 1 || recursive) && !opts.has('h') || opts.has('H');
    let (invert, number, count, list, list_missing, quiet, only) =
        (opts.has('v'), opts.has('n'), opts.has('c'), opts.has('l'), opts.has('L'), opts.has('q'), opts.has('o'));
    let mut matched_any = false;
    let mut errors = 0;
    let mut sink = io::sink();
    let errors_to: &mut dyn Write = if opts.has('s') { &mut sink } else { err };
    let status = for_each_input(ctx, "grep", &files, stdin, errors_to, |name, input| {
        let shown = if name == "-" { "(standard input)" } else { name };
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        let mut matches = 0u64;
        let body = data.strip_suffix(b"\n").unwrap_or(&data);
        let lines = if data.is_empty() { None } else { Some(body.split(|b| *b == b'\n')) };
        for (n, line) in lines.into_iter().flatten().enumerate() {
            let hit = re.is_match(line) != invert;
            if !hit {
                continue;
            }
            matches += 1;
            matched_any = true;
            if quiet {
                return Ok(());
            }
            if count || list || list_missing {
                continue;
            }
            let prefix = match (show_names, number) {
                (true, true) => format!("{shown}:{}:", n + 1),
                (true, false) => format!("{shown}:"),
                (false, true) => format!("{}:", n + 1),
                (false, false) => String::new(),
            };
            if only && !invert {
                for m in re.find_iter(line) {
                    out.write_all(prefix.as_bytes())?;
                    out.write_all(m.as_bytes())?;
                    out.write_all(b"\n")?;
                }
            } else {
                out.write_all(prefix.as_bytes())?;
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
        }
        if count && !quiet {
            if show_names {
                writeln!(out, "{shown}:{matches}")?;
            } else {
                writeln!(out, "{matches}")?;
            }
        }
        if list && matches > 0 && !quiet {
            writeln!(out, "{shown}")?;
        }
        if list_missing && matches == 0 && !quiet {
            writeln!(out, "{shown}")?;
        }
        Ok(())
    });
    if status != 0 {
        errors += 1;
    }
    if quiet && matched_any {
        return 0;
    }
    if errors > 0 {
        2
    } else if matched_any {
        0
    } else {
        1
    }
}

/// Files under `path` (itself if a file), for `grep -r`.
fn walk(ctx: &Ctx, path: &str, out: &mut Vec<String>) {
    let abs = ctx.abs(path);
    if std::fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
        let mut names = crate::applets::fs::list_dir(&abs).unwrap_or_default();
        names.sort();
        for name in names {
            let child = if path.ends_with('/') { format!("{path}{name}") } else { format!("{path}/{name}") };
            walk(ctx, &child, out);
        }
    } else {
        out.push(path.to_owned());
    }
}

pub fn wc(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("lwcmL").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "wc", e, 1),
    };
    let any = opts.has('l') || opts.has('w') || opts.has('c') || opts.has('m');
    let show = [!any || opts.has('l'), !any || opts.has('w'), !any || opts.has('c') || opts.has('m')];
    let single = show.iter().filter(|s| **s).count() == 1;
    let mut totals = [0u64; 3];
    let mut rows = Vec::new();
    let status = for_each_input(ctx, "wc", &opts.operands, stdin, err, |name, input| {
        let (mut lines, mut words, mut bytes) = (0u64, 0u64, 0u64);
        let mut in_word = false;
        let mut buf = [0u8; 16384];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            for &b in &buf[..n] {
                if b == b'\n' {
                    lines += 1;
                }
                if b.is_ascii_whitespace() {
                    in_word = false;
                } else if !in_word {
                    in_word = true;
                    words += 1;
                }
            }
        }
        let counts = [lines, words, bytes];
        for (total, count) in totals.iter_mut().zip(counts) {
            *total += count;
        }
        rows.push((counts, if name == "-" { String::new() } else { name.to_owned() }));
        Ok(())
    });
    if rows.len() > 1 {
        rows.push((totals, "total".into()));
    }
    for (counts, name) in rows {
        let fields: Vec<String> = counts
            .iter()
            .zip(show)
            .filter(|(_, s)| *s)
            .map(|(c, _)| if single { c.to_string() } else { format!("{c:>7}") })
            .collect();
        let mut line = fields.join(" ");
        if !name.is_empty() {
            line.push(' ');
            line.push_str(&name);
        }
        let _ = writeln!(out, "{line}");
    }
    status
}

/// Reads every input's lines (without their newlines).
fn read_lines(
    ctx: &Ctx,
    applet: &str,
    files: &[String],
    stdin: &mut dyn Read,
    err: &mut dyn Write,
) -> (Vec<String>, i32) {
    let mut lines = Vec::new();
    let status = for_each_input(ctx, applet, files, stdin, err, |_, input| {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        let text = String::from_utf8_lossy(&data);
        lines.extend(text.lines().map(str::to_owned));
        Ok(())
    });
    (lines, status)
}

/// The leading number of a line, as `sort -n` reads it (none sorts as 0).
fn leading_number(line: &str) -> f64 {
    let text = line.trim_start();
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse().unwrap_or(0.0)
}

pub fn sort(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "kto").and_then(|o| o.check("rnufkbsto").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "sort", e, 2),
    };
    let key: Option<usize> = match opts.value('k') {
        Some(k) => match k.split([',', '.']).next().and_then(|n| n.parse().ok()).filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => return fail(err, "sort", format!("invalid key '{k}'"), 2),
        },
        None => None,
    };
    let sep = opts.value('t').and_then(|t| t.chars().next());
    let (mut lines, status) = read_lines(ctx, "sort", &opts.operands, stdin, err);
    let field = |line: &str| -> String {
        match key {
            None => line.to_owned(),
            Some(k) => match sep {
                Some(sep) => line.split(sep).skip(k - 1).collect::<Vec<_>>().join(&sep.to_string()),
                None => line.split_whitespace().skip(k - 1).collect::<Vec<_>>().join(" "),
            },
        }
    };
    let fold = opts.has('f');
    let numeric = opts.has('n');
    let compare = |a: &String, b: &String| {
        let (fa, fb) = (field(a), field(b));

        if numeric {
            leading_number(&fa).partial_cmp(&leading_number(&fb)).unwrap_or(std::cmp::Ordering::Equal)
        } else if fold {
            fa.to_lowercase().cmp(&fb.to_lowercase())
        } else {
            fa.cmp(&fb)
        }
    };
    lines.sort_by(|a, b| {
        compare(a, b).then_with(|| if opts.has('u') || opts.has('s') { std::cmp::Ordering::Equal } else { a.cmp(b) })
    });
    if opts.has('r') {
        lines.reverse();
    }
    if opts.has('u') {
        lines.dedup_by(|a, b| compare(a, b) == std::cmp::Ordering::Equal);
    }
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    let written = match opts.value('o') {
        Some(file) => std::fs::write(ctx.resolve(file), text)
            .map_err(|e| fail(err, "sort", format!("{file}: {}", err_msg(&e)), 2)),
        None => out.write_all(text.as_bytes()).map_err(|_| 2),
    };
    match written {
        Ok(()) => status.min(2) * 2,
        Err(code) => code,
    }
}

pub fn uniq(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = match Opts::parse(args, "").and_then(|o| o.check("cdui").map(|()| o)) {
        Ok(opts) => opts,
        Err(e) => return fail(err, "uniq", e, 1),
    };
    let input: Vec<String> = opts.operands.iter().take(1).cloned().collect();
    let (lines, status) = read_lines(ctx, "uniq", &input, stdin, err);
    if status != 0 {
        return status;
    }
    let same = |a: &str, b: &str| if opts.has('i') { a.eq_ignore_ascii_case(b) } else { a == b };
    let mut text = String::new();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i + 1;
        while j < lines.len() && same(&lines[i], &lines[j]) {
            j += 1;
        }
        let n = j - i;
        let keep = !(opts.has('d') && n == 1 || opts.has('u') && n > 1);
        if keep {
            if opts.has('c') {
                text.push_str(&format!("{n:>7} {}\n", lines[i]));
            } else {
                text.push_str(&lines[i]);
                text.push('\n');
            }
        }
        i = j;
    }
    match opts.operands.get(1) {
        Some(file) => match std::fs::write(ctx.resolve(file), text) {
            Ok(()) => 0,
            Err(e) => fail(err, "uniq", format!("{file}: {}", err_msg(&e)), 1),
        },
        None => i32::from(out.write_all(text.as_bytes()).is_err()),
    }
}

pub fn seq(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut sep = "\n".to_owned();
    let mut width = false;
    let mut nums = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-s" => {
                i += 1;
                sep = args.get(i).cloned().unwrap_or_default();
            }
            "-w" => width = true,
            a if a.starts_with("-s") => sep = a[2..].to_owned(),
            a => nums.push(a.to_owned()),
        }
        i += 1;
    }
    let parsed: Result<Vec<f64>, String> =
        nums.iter().map(|n| n.parse::<f64>().map_err(|_| format!("invalid number '{n}'"))).collect();
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return fail(err, "seq", e, 1),
    };
    let (first, step, last) = match parsed.as_slice() {
        [last] => (1.0, 1.0, *last),
        [first, last] => (*first, 1.0, *last),
        [first, step, last] => (*first, *step, *last),
        _ => return fail(err, "seq", "usage: seq [-s SEP] [FIRST [INC]] LAST", 1),
    };
    if step == 0.0 {
        return fail(err, "seq", "zero increment", 1);
    }
    let decimals = nums
        .iter()
        .take(if nums.len() == 3 { 2 } else { 1 })
        .map(|n| n.split_once('.').map_or(0, |(_, d)| d.len()))
        .max()
        .unwrap_or(0);
    let decimals = decimals.max(if nums.len() >= 2 { nums[0].split_once('.').map_or(0, |(_, d)| d.len()) } else { 0 });
    let pad = if width { format!("{last:.decimals$}").len() } else { 0 };
    let mut value = first;
    let mut n = 0u64;
    let mut first_item = true;
    let mut buffer = String::new();
    while (step > 0.0 && value <= last + 1e-9) || (step < 0.0 && value >= last - 1e-9) {
        if !first_item {
            buffer.push_str(&sep);
        }
        first_item = false;
        buffer.push_str(&format!("{value:0pad$.decimals$}"));
        if buffer.len() > 1 << 16 {
            if out.write_all(buffer.as_bytes()).is_err() {
                return 1;
            }
            buffer.clear();
        }
        n += 1;
        value = first + step * n as f64;
    }
    if !first_item {
        buffer.push('\n');
    }
    i32::from(out.write_all(buffer.as_bytes()).is_err())
}
