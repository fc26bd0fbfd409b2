//! `toolbox`: the busybox of Flotilla's wasm pods, one `wasm32-wasip2` command component
//! that `kubectl exec POD -- CMD` runs in the pod's sandbox (its preopened volumes, its
//! environment, its outgoing-HTTP policy).
//!
//! # What it owns
//!
//! The command side of `kubectl exec`/`kubectl cp`: choosing the applet (multicall: the
//! basename of `argv[0]`, or `argv[1]` when `argv[0]` is `toolbox`, `busybox` or no
//! applet's name; an unknown command is `sh: NAME: not found`, exit 127), the applets
//! themselves, and a shell. It reads stdin and writes stdout/stderr and nothing more:
//! the terminal's line discipline (echo, CR→NL, NL→CRNL, ^C, ^D) is the host's, as a
//! kernel pty's would be. It must not touch anything outside the host's preopens (it
//! cannot) and keeps no state between runs.
//!
//! # Applets
//!
//! `sh ls cat echo printf env printenv pwd cd mkdir rm rmdir cp mv touch head tail grep
//! wc sort uniq seq date sleep uptime hostname true false test [ gzip gunzip zcat tar
//! wget curl basename dirname which clear id whoami uname`, plus `tee tr cut find du
//! xargs` (what one-liners reach for next); `APPLET --help` prints a
//! one-line usage. Flags are the ones typed daily (`ls -laR1`, `grep -ivncrlqwEF`,
//! `tar -c/-x/-t -zvmO -f F -C DIR`, including the dashless `tar xmf -` and every argv
//! `kubectl cp` sends: `test -d DEST`, `tar -xmf - -C DIR`, `tar --no-same-permissions
//! --no-same-owner -xmf - -C DIR`, `tar cf - PATH` and `sh -c 'tar cf - PATH | tail
//! -c+N'`). Messages and exit codes follow busybox (`ls: /nope: No such file or
//! directory`, 1); `curl` exits 6/7/22/28 and `wget` 4/8 like the real ones. The exit
//! status leaves through `wasi:cli/exit.exit-with-code` (std's `process::exit` would
//! collapse every failure to 1 on wasip2). `tar` writes member names without their
//! leading `/` (with GNU tar's warning) and refuses `..` members on extraction; symlinks
//! are skipped (wasip2 cannot create them), hard links are copied.
//!
//! `curl`/`wget` speak HTTP through `wasi:http/outgoing-handler`, so the host's egress
//! policy applies (a denied host is "Failed to connect", 7 / 4); `localhost` and
//! `127.0.0.1` without a port mean port 80; `Host`, `Connection` and the other headers
//! wasi:http refuses are dropped with a warning. `grep` matches bytes like grep in the C
//! locale (`-i` and `\w` are ASCII).
//!
//! Paths: the shell keeps its own cwd (`$PWD`, default `/`) and every applet resolves
//! paths against it ([`ctx::Ctx::abs`]) before calling `std::fs`, whose absolute paths
//! wasi-libc maps onto the longest matching preopen. `ls /` lists the root preopen
//! merged with the mount points of the other preopens (or those alone if there is no
//! root preopen). Times are UTC (no zone database); `uptime` says `up unknown`, there
//! is no boot time or load to read; `id`/`whoami` say root.
//!
//! # The shell's grammar
//!
//! Hand-written (no crate runs a shell on wasip2): words with `'…'`, `"…"` and `\`
//! quoting; `$X ${X} $? $# $@ $* $0 $1…` and `${X:-w} ${X:=w} ${X:+w} ${X:?w} ${#X}
//! ${X#p} ${X##p} ${X%p} ${X%%p}`; `$(…)`, backquotes and `$((…))` (C integer
//! operators and `**`); field splitting on `$IFS`; `*`, `?`, `[…]` globbing against the
//! filesystem; `~`; assignments, `X=1 cmd`; pipelines, `!`, `&&`, `||`, `;`, `&` (run in
//! the foreground: there are no jobs); redirections `< > >> >| <> n>&m n>&- << <<- <<<`
//! (`/dev/null`, `/dev/stdout`, `/dev/stderr`, `/dev/stdin` handled by the shell);
//! `if/elif/else`, `for`, `while`, `until`, `case` (glob patterns), `{ …; }`, `( … )`,
//! `name() { …; }`; builtins `cd export unset exit set (-e -x --) shift read return
//! break continue eval . exec command -v type local readonly :` (and no-op `trap wait
//! umask ulimit alias hash`). Without `-c` or a script it reads stdin one line at a
//! time (a command runs as soon as it is complete, and commands reading stdin get the
//! rest), printing busybox's `/path # ` prompt to stdout when stdin is a terminal or
//! `-i` is given, and flushing stdout after each command. A syntax error anywhere in a
//! `-c` string or script stops it before anything runs (exit 2). Nesting (functions,
//! substitutions, subshells, `eval`, `.`, nested `sh`) stops at 50 with `sh: nesting too
//! deep`, well inside wasmtime's default 512 KiB of wasm stack.
//!
//! # Why pipelines run inside one instance
//!
//! A wasip2 command cannot spawn processes or create pipes, and the host starts one
//! instance per exec. So an applet is a Rust function over `Read`/`Write` and a
//! pipeline `a | b | c` runs its stages one after the other in this instance, each
//! stage's whole output buffered in memory and then fed to the next stage as its stdin.
//! The price: stages do not run concurrently (`tail -f log | grep x` never prints,
//! an interactive `cat | sort` waits for ^D) and a stage's output is capped at
//! [`sh::STAGE_LIMIT`] (64 MiB, an error past it), so `yes | head`-style infinite
//! producers cannot work (there is no `yes`). The last stage writes straight to the
//! real stdout, so `tar cf - /big` alone streams (what plain `kubectl cp POD:/dir .`
//! runs), while `kubectl cp --retries`'s `sh -c 'tar cf - DIR | tail -c+N'` holds the
//! archive in memory and so copies at most 64 MiB. The same holds for `$(…)`. That is
//! also why uutils' coreutils are not used: their utilities write to the process's
//! stdout directly and could not be a stage of an in-instance pipeline.
//!
//! # Tests
//!
//! Everything but HTTP and the preopens is plain Rust and tested natively:
//! `cargo test --manifest-path wasm-examples/toolbox/Cargo.toml --target
//! x86_64-unknown-linux-gnu`.

mod applets;
mod ctx;
mod sh;

use std::io::Write;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut ctx = ctx::Ctx::from_process();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let code = applets::multicall(&mut ctx, &argv, &mut input, &mut out, &mut err);
    let _ = out.flush();
    let _ = err.flush();
    exit(code)
}

/// Exits with `code` as the host sees it. Rust's `process::exit` on wasip2 goes through
/// `wasi:cli/exit.exit(result)`, which only tells success from failure (every failure
/// becomes 1); `exit-with-code` (wasi:cli 0.2.12, which wasmtime-wasi 48 provides)
/// carries 127, 2, 7… so `kubectl exec` reports what a shell would.
fn exit(code: i32) -> ! {
    #[cfg(target_os = "wasi")]
    if code != 0 {
        wasi::cli::exit::exit_with_code((code & 0xff) as u8);
    }
    std::process::exit(code)
}
