//! Everything else: `env printenv pwd cd date sleep uptime hostname id whoami uname true
//! false test [ which clear basename dirname`.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fail;
use crate::ctx::{self, Ctx, err_msg};

pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
pub const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// Seconds since the epoch (negative before it).
pub fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A broken-down UTC time (the pod has no time zone database: everything is UTC).
#[derive(Debug, PartialEq)]
pub struct Tm {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    /// 0 = Sunday
    pub weekday: u32,
    /// 1-based
    pub yday: u32,
}

impl Tm {
    /// Howard Hinnant's `civil_from_days`.
    pub fn from_unix(secs: i64) -> Tm {
        let days = secs.div_euclid(86400);
        let rem = secs.rem_euclid(86400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUM[month as usize - 1] + day + u32::from(leap && month > 2);
        Tm {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            min: (rem % 3600 / 60) as u32,
            sec: (rem % 60) as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
            yday,
        }
    }
}

/// `strftime` for the common conversions, in UTC.
pub fn strftime(format: &str, secs: i64) -> String {
    let t = Tm::from_unix(secs);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(conv) = chars.next() else {
            out.push('%');
            break;
        };
        let month = MONTHS[t.month as usize - 1];
        let day = DAYS[t.weekday as usize];
        match conv {
            'Y' => out.push_str(&t.year.to_string()),
            'C' => out.push_str(&format!("{:02}", t.year / 100)),
            'y' => out.push_str(&format!("{:02}", t.year % 100)),
            'm' => out.push_str(&format!("{:02}", t.month)),
            'd' => out.push_str(&format!("{:02}", t.day)),
            'e' => out.push_str(&format!("{:>2}", t.day)),
            'H' => out.push_str(&format!("{:02}", t.hour)),
            'k' => out.push_str(&format!("{:>2}", t.hour)),
            'I' => out.push_str(&format!("{:02}", (t.hour + 11) % 12 + 1)),
            'l' => out.push_str(&format!("{:>2}", (t.hour + 11) % 12 + 1)),
            'M' => out.push_str(&format!("{:02}", t.min)),
            'S' => out.push_str(&format!("{:02}", t.sec)),
            'N' => {
                let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
                out.push_str(&format!("{nanos:09}"));
            }
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'P' => out.push_str(if t.hour < 12 { "am" } else { "pm" }),
            'b' | 'h' => out.push_str(&month[..3]),
            'B' => out.push_str(month),
            'a' => out.push_str(&day[..3]),
            'A' => out.push_str(day),
            'u' => out.push_str(&(if t.weekday == 0 { 7 } else { t.weekday }).to_string()),
            'w' => out.push_str(&t.weekday.to_string()),
            'j' => out.push_str(&format!("{:03}", t.yday)),
            's' => out.push_str(&secs.to_string()),
            'Z' => out.push_str("UTC"),
            'z' => out.push_str("+0000"),
            'T' => out.push_str(&format!("{:02}:{:02}:{:02}", t.hour, t.min, t.sec)),
            'R' => out.push_str(&format!("{:02}:{:02}", t.hour, t.min)),
            'D' => out.push_str(&format!("{:02}/{:02}/{:02}", t.month, t.day, t.year % 100)),
            'F' => out.push_str(&format!("{}-{:02}-{:02}", t.year, t.month, t.day)),
            'c' => out.push_str(&strftime("%a %b %e %H:%M:%S %Y", secs)),
            'x' => out.push_str(&strftime("%m/%d/%y", secs)),
            'X' => out.push_str(&strftime("%H:%M:%S", secs)),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

pub fn date(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut format = "%a %b %e %H:%M:%S %Z %Y".to_owned();
    let mut secs = unix_secs(SystemTime::now());
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-u" | "--utc" => {}
            "-R" => format = "%a, %d %b %Y %H:%M:%S %z".into(),
            "-I" | "--iso-8601" => format = "%F".into(),
            "-d" | "--date" => {
                i += 1;
                match args.get(i).and_then(|d| d.strip_prefix('@')).and_then(|d| d.parse().ok()) {
                    Some(s) => secs = s,
                    None => return fail(err, "date", "only -d @SECONDS is supported", 1),
                }
            }
            f if f.starts_with('+') => format = f[1..].to_owned(),
            other => return fail(err, "date", format!("invalid date '{other}'"), 1),
        }
        i += 1;
    }
    i32::from(writeln!(out, "{}", strftime(&format, secs)).is_err())
}

/// `1.5`, `2m`, `1h`, `3d`, summed like coreutils.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, mult) = match text.char_indices().last()? {
        (at, 's') => (&text[..at], 1.0),
        (at, 'm') => (&text[..at], 60.0),
        (at, 'h') => (&text[..at], 3600.0),
        (at, 'd') => (&text[..at], 86400.0),
        _ => (text, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64((value * mult).min(1e9)))
}

pub fn sleep(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if args.len() < 2 {
        return fail(err, "sleep", "usage: sleep N[smhd]...", 1);
    }
    let mut total = Duration::ZERO;
    for arg in &args[1..] {
        match parse_duration(arg) {
            Some(d) => total += d,
            None => return fail(err, "sleep", format!("invalid number '{arg}'"), 1),
        }
    }
    std::thread::sleep(total);
    0
}

pub fn uptime(
    _ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    // A sandbox knows the time but neither its boot time nor the host's load.
    let now = strftime("%H:%M:%S", unix_secs(SystemTime::now()));
    i32::from(writeln!(out, " {now} up unknown,  load average: n/a").is_err())
}

fn host_name(ctx: &Ctx) -> String {
    ctx.var("HOSTNAME").filter(|h| !h.is_empty()).unwrap_or("localhost").to_owned()
}

pub fn hostname(
    ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    i32::from(writeln!(out, "{}", host_name(ctx)).is_err())
}

pub fn id(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, _err: &mut dyn Write) -> i32 {
    let flags: String = args[1..].iter().filter_map(|a| a.strip_prefix('-')).collect();
    let name = flags.contains('n');
    let text = if flags.contains('u') || flags.contains('g') || flags.contains('G') {
        if name { "root" } else { "0" }
    } else {
        "uid=0(root) gid=0(root) groups=0(root)"
    };
    i32::from(writeln!(out, "{text}").is_err())
}

pub fn whoami(
    _ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    i32::from(writeln!(out, "root").is_err())
}

pub fn uname(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut flags: String = String::new();
    for arg in &args[1..] {
        match arg.strip_prefix('-') {
            Some(f) if f.chars().all(|c| "asnrvmpio".contains(c)) => flags.push_str(f),
            _ => return fail(err, "uname", format!("invalid option '{arg}'"), 1),
        }
    }
    if flags.is_empty() {
        flags.push('s');
    }
    if flags.contains('a') {
        flags = "snrvmo".into();
    }
    let host = host_name(ctx);
    let fields: Vec<&str> = "snrvmpio"
        .chars()
        .filter(|c| flags.contains(*c))
        .map(|c| match c {
            's' => "WASI",
            'n' => host.as_str(),
            'r' => "0.2",
            'v' => "wasip2",
            'm' | 'p' | 'i' => "wasm32",
            _ => "WASI",
        })
        .collect();
    i32::from(writeln!(out, "{}", fields.join(" ")).is_err())
}

pub fn true_(
    _ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    _out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    0
}

pub fn false_(
    _ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    _out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    1
}

pub fn pwd(ctx: &mut Ctx, _args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, _err: &mut dyn Write) -> i32 {
    i32::from(writeln!(out, "{}", ctx.cwd).is_err())
}

pub fn cd(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // As a command of its own (`kubectl exec POD -- cd /x`), cd can only check its target.
    let target = args.get(1).cloned().unwrap_or_else(|| ctx.var("HOME").unwrap_or("/").to_owned());
    let abs = ctx.abs(&target);
    match std::fs::metadata(&abs) {
        _ if abs == "/" => 0,
        Ok(meta) if meta.is_dir() => 0,
        Ok(_) => fail(err, "cd", format!("can't cd to {target}: Not a directory"), 2),
        Err(e) => fail(err, "cd", format!("can't cd to {target}: {}", err_msg(&e)), 2),
    }
}

pub fn clear(
    _ctx: &mut Ctx,
    _args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    i32::from(out.write_all(b"\x1b[H\x1b[J").is_err())
}

pub fn basename(
    _ctx: &mut Ctx,
    args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Some(path) = args.get(1) else {
        return fail(err, "basename", "missing operand", 1);
    };
    let mut base = ctx::basename(path).to_owned();
    if let Some(suffix) = args.get(2)
        && base != *suffix
        && let Some(stripped) = base.strip_suffix(suffix.as_str())
    {
        base = stripped.to_owned();
    }
    i32::from(writeln!(out, "{base}").is_err())
}

pub fn dirname(
    _ctx: &mut Ctx,
    args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Some(path) = args.get(1) else {
        return fail(err, "dirname", "missing operand", 1);
    };
    i32::from(writeln!(out, "{}", ctx::dirname(path)).is_err())
}

pub fn which(_ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, _err: &mut dyn Write) -> i32 {
    let mut status = 0;
    for name in args[1..].iter().filter(|a| !a.starts_with('-')) {
        if super::find(ctx::basename(name)).is_some() && name != "cd" {
            let _ = writeln!(out, "{}", if name.contains('/') { name.clone() } else { format!("/bin/{name}") });
        } else {
            status = 1;
        }
    }
    status
}

pub fn env(ctx: &mut Ctx, args: &[String], stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut env = ctx.env.clone();
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg == "-i" || arg == "-" {
            env.clear();
        } else if arg == "-u" {
            i += 1;
            if let Some(name) = args.get(i) {
                env.remove(name);
            }
        } else if let Some((name, value)) = arg.split_once('=') {
            env.insert(name.to_owned(), value.to_owned());
        } else {
            break;
        }
        i += 1;
    }
    if i >= args.len() {
        for (name, value) in &env {
            if writeln!(out, "{name}={value}").is_err() {
                return 1;
            }
        }
        return 0;
    }
    let name = ctx::basename(&args[i]).to_owned();
    match super::find(&name) {
        Some(entry) => {
            let mut child = Ctx { cwd: ctx.cwd.clone(), env, tty: ctx.tty, depth: ctx.depth + 1 };
            let mut argv = args[i..].to_vec();
            argv[0] = name;
            entry.run(&mut child, &argv, stdin, out, err)
        }
        None => fail(err, "env", format!("can't execute '{}': No such file or directory", args[i]), 127),
    }
}

pub fn printenv(
    ctx: &mut Ctx,
    args: &[String],
    _stdin: &mut dyn Read,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> i32 {
    if args.len() < 2 {
        for (name, value) in &ctx.env {
            let _ = writeln!(out, "{name}={value}");
        }
        return 0;
    }
    let mut status = 0;
    for name in &args[1..] {
        match ctx.var(name) {
            Some(value) => {
                let _ = writeln!(out, "{value}");
            }
            None => status = 1,
        }
    }
    status
}

/// `test` and `[`: unary file and string tests, binary string and integer comparisons,
/// `!`, `-a`, `-o` and parentheses. Exit 0 true, 1 false, 2 on a bad expression.
pub fn test(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut words: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    if args[0] == "[" {
        if words.last() != Some(&"]") {
            return fail(err, "[", "missing ]", 2);
        }
        words.pop();
    }
    let mut t = Test { ctx, w: &words, i: 0 };
    match t.or() {
        Ok(value) if t.i == words.len() => i32::from(!value),
        Ok(_) => fail(err, &args[0], format!("{}: unexpected operator", words[t.i]), 2),
        Err(message) => fail(err, &args[0], message, 2),
    }
}

struct Test<'a> {
    ctx: &'a Ctx,
    w: &'a [&'a str],
    i: usize,
}

impl Test<'_> {
    fn or(&mut self) -> Result<bool, String> {
        let mut value = self.and()?;
        while self.w.get(self.i) == Some(&"-o") {
            self.i += 1;
            value |= self.and()?;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut value = self.not()?;
        while self.w.get(self.i) == Some(&"-a") {
            self.i += 1;
            value &= self.not()?;
        }
        Ok(value)
    }

    fn not(&mut self) -> Result<bool, String> {
        if self.w.get(self.i) == Some(&"!") && self.w.len() - self.i > 1 {
            self.i += 1;
            return Ok(!self.not()?);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<bool, String> {
        let rest = &self.w[self.i..];
        let Some(&first) = rest.first() else { return Ok(false) };
        if first == "(" && rest.len() > 2 {
            self.i += 1;
            let value = self.or()?;
            if self.w.get(self.i) != Some(&")") {
                return Err("missing )".into());
            }
            self.i += 1;
            return Ok(value);
        }
        if rest.len() >= 3 && is_binary(rest[1]) {
            self.i += 3;
            return binary(rest[0], rest[1], rest[2]);
        }
        if rest.len() >= 2 && first.len() == 2 && first.starts_with('-') && !matches!(first, "-a" | "-o")
            || (rest.len() >= 2 && matches!(first, "-a" | "-o") && !is_binary(rest[1]))
        {
            self.i += 2;
            return Ok(self.unary(first, rest[1]));
        }
        self.i += 1;
        Ok(!first.is_empty())
    }

    fn unary(&self, op: &str, arg: &str) -> bool {
        let abs = self.ctx.abs(arg);
        let meta = || if abs == "/" { std::fs::metadata("/").ok().or(None) } else { std::fs::metadata(&abs).ok() };
        match op {
            "-n" => !arg.is_empty(),
            "-z" => arg.is_empty(),
            "-e" | "-a" => abs == "/" || meta().is_some(),
            "-f" => meta().is_some_and(|m| m.is_file()),
            "-d" => abs == "/" || meta().is_some_and(|m| m.is_dir()),
            "-s" => meta().is_some_and(|m| m.len() > 0),
            "-r" | "-w" | "-x" => abs == "/" || meta().is_some(),
            "-L" | "-h" => std::fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink()),
            "-t" => false,
            _ => !op.is_empty(),
        }
    }
}

fn is_binary(op: &str) -> bool {
    matches!(op, "=" | "==" | "!=" | "<" | ">" | "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge")
}

fn binary(a: &str, op: &str, b: &str) -> Result<bool, String> {
    let int = |s: &str| s.trim().parse::<i64>().map_err(|_| format!("{s}: bad number"));
    Ok(match op {
        "=" | "==" => a == b,
        "!=" => a != b,
        "<" => a < b,
        ">" => a > b,
        "-eq" => int(a)? == int(b)?,
        "-ne" => int(a)? != int(b)?,
        "-lt" => int(a)? < int(b)?,
        "-le" => int(a)? <= int(b)?,
        "-gt" => int(a)? > int(b)?,
        _ => int(a)? >= int(b)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        let t = Tm::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday, t.yday), (1970, 1, 1, 4, 1));
        // 2024-02-29 12:34:56 UTC
        let t = Tm::from_unix(1_709_210_096);
        assert_eq!((t.year, t.month, t.day, t.hour, t.min, t.sec, t.weekday), (2024, 2, 29, 12, 34, 56, 4));
        assert_eq!(strftime("%F %T %a %b %j %%", 1_709_210_096), "2024-02-29 12:34:56 Thu Feb 060 %");
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}
