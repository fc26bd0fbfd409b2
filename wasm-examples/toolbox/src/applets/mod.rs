//! The applets: `fn(ctx, args, stdin, stdout, stderr) -> exit status`, `args[0]` being
//! the applet's name. They only touch the streams they are given (never the process's
//! own), so the shell can run them as pipeline stages inside one instance.

pub mod archive;
pub mod extra;
pub mod fs;
pub mod misc;
pub mod net;
pub mod text;

use std::io::{Read, Write};

use crate::ctx::Ctx;

/// An applet's entry point.
pub type Applet = fn(&mut Ctx, &[String], &mut dyn Read, &mut dyn Write, &mut dyn Write) -> i32;

/// One applet: its name, entry point and one-line usage (`NAME --help`).
pub struct Entry {
    pub name: &'static str,
    pub run: Applet,
    pub usage: &'static str,
}

macro_rules! applets {
    ($($name:literal => $run:path, $usage:literal;)*) => {
        /// Every applet, sorted by name.
        pub const APPLETS: &[Entry] = &[$(Entry { name: $name, run: $run, usage: $usage },)*];
    };
}

applets! {
    "[" => misc::test, "[ EXPRESSION ]";
    "basename" => misc::basename, "basename PATH [SUFFIX]";
    "cat" => fs::cat, "cat [FILE]...";
    "cd" => misc::cd, "cd [DIR] (a shell builtin; alone it only checks DIR)";
    "clear" => misc::clear, "clear";
    "cp" => fs::cp, "cp [-rRaf] SOURCE... DEST";
    "cut" => extra::cut, "cut -d D -f LIST | -c LIST [-s] [FILE]...";
    "curl" => net::curl, "curl [-sSfiIL] [-o FILE] [-X METHOD] [-d DATA] [-H 'K: V'] URL";
    "date" => misc::date, "date [-u] [+FORMAT]";
    "dirname" => misc::dirname, "dirname PATH";
    "du" => extra::du, "du [-shac] [-d N] [PATH]...";
    "echo" => text::echo, "echo [-neE] [ARG]...";
    "env" => misc::env, "env [-i] [NAME=VALUE]... [COMMAND [ARG]...]";
    "false" => misc::false_, "false";
    "find" => extra::find, "find [PATH]... [-name PAT] [-iname PAT] [-type f|d|l] [-maxdepth N] [-mindepth N]";
    "grep" => text::grep, "grep [-ivncrlqwhHEF] [-e PATTERN]... [PATTERN] [FILE]...";
    "gunzip" => archive::gunzip, "gunzip [-cfk] [FILE]...";
    "gzip" => archive::gzip, "gzip [-cdfk] [FILE]...";
    "head" => text::head, "head [-n N] [-c N] [FILE]...";
    "hostname" => misc::hostname, "hostname";
    "id" => misc::id, "id [-u|-g] [-n]";
    "ls" => fs::ls, "ls [-1alARdh] [FILE]...";
    "mkdir" => fs::mkdir, "mkdir [-p] DIR...";
    "mv" => fs::mv, "mv [-f] SOURCE... DEST";
    "printenv" => misc::printenv, "printenv [NAME]...";
    "printf" => text::printf, "printf FORMAT [ARG]...";
    "pwd" => misc::pwd, "pwd";
    "rm" => fs::rm, "rm [-rf] FILE...";
    "rmdir" => fs::rmdir, "rmdir DIR...";
    "seq" => text::seq, "seq [-s SEP] [FIRST [INC]] LAST";
    "sh" => crate::sh::main, "sh [-eix] [-c 'SCRIPT' [ARG0 [ARGS]] | FILE [ARGS]]";
    "sleep" => misc::sleep, "sleep N[smhd]...";
    "sort" => text::sort, "sort [-rnuf] [-k N] [-t SEP] [FILE]...";
    "tail" => text::tail, "tail [-n [+]N] [-c [+]N] [FILE]...";
    "tar" => archive::tar, "tar -c|-x|-t [-zvmo] [-f FILE] [-C DIR] [PATH]...";
    "tee" => extra::tee, "tee [-a] [FILE]...";
    "test" => misc::test, "test EXPRESSION";
    "touch" => fs::touch, "touch [-c] FILE...";
    "tr" => extra::tr, "tr [-dsc] SET1 [SET2]";
    "true" => misc::true_, "true";
    "uname" => misc::uname, "uname [-asnrvmo]";
    "uniq" => text::uniq, "uniq [-cdu] [INPUT [OUTPUT]]";
    "uptime" => misc::uptime, "uptime";
    "wc" => text::wc, "wc [-lwcm] [FILE]...";
    "wget" => net::wget, "wget [-qS] [-O FILE] [--header 'K: V'] URL";
    "which" => misc::which, "which NAME...";
    "whoami" => misc::whoami, "whoami";
    "xargs" => extra::xargs, "xargs [-r] [-n N] [COMMAND [ARG]...]";
    "zcat" => archive::zcat, "zcat [FILE]...";
}

/// The applet called `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    APPLETS.iter().find(|entry| entry.name == name)
}

impl Entry {
    /// Runs the applet; `--help` as the only argument prints its usage instead (except
    /// for the applets that print their arguments).
    pub fn run(
        &self,
        ctx: &mut Ctx,
        args: &[String],
        stdin: &mut dyn Read,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> i32 {
        if args.len() == 2
            && args[1] == "--help"
            && !matches!(self.name, "echo" | "printf" | "[" | "test" | "true" | "false")
        {
            let _ = writeln!(out, "Usage: {}", self.usage);
            return 0;
        }
        (self.run)(ctx, args, stdin, out, err)
    }
}

/// The process entry: picks the applet from `argv[0]`'s basename, or from `argv[1]`
/// when `argv[0]` is `toolbox`, `busybox` or no applet's name.
pub fn multicall(
    ctx: &mut Ctx,
    argv: &[String],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let arg0 = argv.first().map(String::as_str).unwrap_or("toolbox");
    let name = crate::ctx::basename(arg0).trim_start_matches('-');
    let name = name.strip_suffix(".wasm").unwrap_or(name);
    if let Some(entry) = find(name) {
        let mut args = argv.to_vec();
        args[0] = name.to_owned();
        return entry.run(ctx, &args, stdin, out, err);
    }
    let Some(applet) = argv.get(1) else {
        if matches!(name, "toolbox" | "busybox") {
            let _ = writeln!(out, "Usage: {name} APPLET [ARG]... (or run it as APPLET)\n\nApplets:");
            let names: Vec<&str> = APPLETS.iter().map(|e| e.name).collect();
            let _ = writeln!(out, "  {}", names.join(" "));
            return 0;
        }
        let _ = writeln!(err, "sh: {arg0}: not found");
        return 127;
    };
    let applet_name = crate::ctx::basename(applet);
    match find(applet_name) {
        Some(entry) => {
            let mut args = argv[1..].to_vec();
            args[0] = applet_name.to_owned();
            entry.run(ctx, &args, stdin, out, err)
        }
        None => {
            let missing = if matches!(name, "toolbox" | "busybox") { applet } else { arg0 };
            let _ = writeln!(err, "sh: {missing}: not found");
            127
        }
    }
}

/// Writes `APPLET: message` to stderr and returns `status`.
pub fn fail(err: &mut dyn Write, applet: &str, message: impl std::fmt::Display, status: i32) -> i32 {
    let _ = writeln!(err, "{applet}: {message}");
    status
}

/// Splits `args[1..]` into short flags (from `-abc` bundles; `--` ends them) and
/// operands. `with_value` lists the flags that take a value (attached or next arg).
pub struct Opts {
    pub flags: Vec<(char, Option<String>)>,
    pub operands: Vec<String>,
}

impl Opts {
    pub fn parse(args: &[String], with_value: &str) -> Result<Opts, String> {
        let mut flags = Vec::new();
        let mut operands = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let arg = &args[i];
            if arg == "--" {
                operands.extend(args[i + 1..].iter().cloned());
                break;
            }
            if arg.len() > 1 && arg.starts_with('-') && !arg.starts_with("--") {
                let chars: Vec<char> = arg[1..].chars().collect();
                let mut j = 0;
                while j < chars.len() {
                    let c = chars[j];
                    if with_value.contains(c) {
                        let attached: String = chars[j + 1..].iter().collect();
                        let value = if !attached.is_empty() {
                            attached
                        } else {
                            i += 1;
                            args.get(i).cloned().ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                        };
                        flags.push((c, Some(value)));
                        break;
                    }
                    flags.push((c, None));
                    j += 1;
                }
            } else {
                operands.push(arg.clone());
            }
            i += 1;
        }
        Ok(Opts { flags, operands })
    }

    pub fn has(&self, c: char) -> bool {
        self.flags.iter().any(|(f, _)| *f == c)
    }

    /// The last value of a flag that takes one.
    pub fn value(&self, c: char) -> Option<&str> {
        self.flags.iter().rev().find(|(f, _)| *f == c).and_then(|(_, v)| v.as_deref())
    }

    /// Rejects flags outside `allowed` (`APPLET: invalid option -- 'x'`).
    pub fn check(&self, allowed: &str) -> Result<(), String> {
        match self.flags.iter().find(|(f, _)| !allowed.contains(*f)) {
            Some((f, _)) => Err(format!("invalid option -- '{f}'")),
            None => Ok(()),
        }
    }
}

/// Opens each operand (`-` or none: stdin) and hands its reader to `each` with its name;
/// prints `APPLET: NAME: error` for those that fail. Returns 1 if any failed.
pub fn for_each_input(
    ctx: &Ctx,
    applet: &str,
    files: &[String],
    stdin: &mut dyn Read,
    err: &mut dyn Write,
    mut each: impl FnMut(&str, &mut dyn Read) -> std::io::Result<()>,
) -> i32 {
    let stdin_name = vec!["-".to_owned()];
    let files = if files.is_empty() { &stdin_name } else { files };
    let mut status = 0;
    for name in files {
        let result = if name == "-" {
            each(name, stdin)
        } else {
            match std::fs::File::open(ctx.resolve(name)) {
                Ok(file) if file.metadata().is_ok_and(|m| m.is_dir()) => {
                    Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "Is a directory"))
                }
                Ok(mut file) => each(name, &mut file),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return status;
            }
            let _ = writeln!(err, "{applet}: {name}: {}", crate::ctx::err_msg(&e));
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests;
