"""The client side of the ``workbench`` command: ``sessions``, ``exec``, ``files``, ``attach``, ``library``.

Each command talks to a running server through ``workbench.client``; the server is named by ``--url``
(or ``$WORKBENCH_URL``) and the token by ``--token`` (or ``$WORKBENCH_TOKEN``, else the admin token a
server on this host saved in ``$WORKBENCH_STATE_DIR/admin-token``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeAlias

import httpx
import websockets.exceptions

from workbench.client import (
    DEFAULT_URL,
    Event,
    Execution,
    FileEntry,
    InputHandler,
    SessionInfo,
    Unauthorized,
    Workbench,
    WorkbenchAPIError,
    default_url,
)

EXIT_FAILED = 1
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

Command = Callable[[Workbench, argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# Output


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _write(stream: TextIO, text: str) -> None:
    """Write ``text`` as it comes; ANSI colours (IPython tracebacks) only on a terminal."""
    stream.write(text if stream.isatty() else ANSI_ESCAPE.sub("", text))
    stream.flush()


class _LivePrinter:
    """Prints the events of a ``run`` as they arrive: stdout to stdout, everything else to stderr."""

    def __init__(self) -> None:
        self.printed_error = False

    def __call__(self, event: Event) -> None:
        kind = event["type"]
        if kind == "stream":
            _write(sys.stdout if event["name"] == "stdout" else sys.stderr, event["text"])
        elif kind in ("execute_result", "display_data"):
            _write(sys.stdout, _plain_text(event["data"]) + "\n")
        elif kind == "error":
            self.printed_error = True
            _write(sys.stderr, "\n".join(event.get("traceback") or [event.get("message", "")]) + "\n")
        elif kind == "kernel" and event["state"] in ("dead", "restarting"):
            _write(sys.stderr, f"[workbench: kernel {event['state']}: {event.get('reason', '')}]\n")

    def finish(self, result: Execution) -> None:
        """Report what the events did not say."""
        if result.status == "error" and result.error and not self.printed_error:
            _write(sys.stderr, f"{result.error['ename']}: {result.error['evalue']}\n")
        elif result.status in ("timeout", "aborted"):
            _write(
                sys.stderr, f"workbench: execution {result.status} ({result.reason or 'no reason given'})\n"
            )


def _exit_status(result: Execution) -> int:
    if result.ok:
        return 0
    return EXIT_TIMEOUT if result.status == "timeout" else EXIT_FAILED


def _plain_text(data: dict[str, Any]) -> str:
    if "text/plain" in data:
        return str(data["text/plain"])
    return f"[{', '.join(sorted(data))} output]"


def _session_rows(sessions: list[SessionInfo]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "KERNEL", "CREATED", "LAST ACTIVITY")]
    rows.extend((s.id, s.status, s.kernel_state, s.created_at, s.last_activity_at) for s in sessions)
    return rows


def _file_rows(entries: list[FileEntry]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("TYPE", "SIZE", "MODIFIED", "PATH")]
    rows.extend((e.type, str(e.size), e.modified, e.path) for e in entries)
    return rows


# sessions


def cmd_sessions_ls(wb: Workbench, args: argparse.Namespace) -> int:
    infos = [session.info for session in wb.sessions()]
    if args.json:
        _print_json([info.raw for info in infos])
    elif infos:
        _print_table(_session_rows(infos))
    return 0


def cmd_sessions_create(wb: Workbench, args: argparse.Namespace) -> int:
    session = wb.create_session(
        memory_mb=args.memory_mb, cpus=args.cpus, idle_timeout=args.idle_timeout, metadata=args.metadata
    )
    if args.json:
        _print_json(session.info.raw)
    else:
        print(session.id)
    return 0


def cmd_sessions_rm(wb: Workbench, args: argparse.Namespace) -> int:
    for session_id in args.sessions:
        wb.session(session_id).delete()
    return 0


def cmd_sessions_interrupt(wb: Workbench, args: argparse.Namespace) -> int:
    wb.session(args.session).interrupt()
    return 0


def cmd_sessions_restart(wb: Workbench, args: argparse.Namespace) -> int:
    wb.session(args.session).restart()
    return 0


# exec


def _terminal_input() -> InputHandler:
    def answer(prompt: str, password: bool) -> str:
        return getpass.getpass(prompt) if password else input(prompt)

    return answer


def cmd_exec(wb: Workbench, args: argparse.Namespace) -> int:
    from_stdin = args.code == "-"
    code = sys.stdin.read() if from_stdin else args.code
    session = wb.session(args.session)
    on_input = None if from_stdin or not sys.stdin.isatty() else _terminal_input()
    printer = _LivePrinter()
    try:
        result = session.run(
            code, timeout=args.timeout, on_output=None if args.json else printer, on_input=on_input
        )
    except KeyboardInterrupt:
        session.interrupt()
        print("\nworkbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        _print_json(result.to_json())
    else:
        printer.finish(result)
    return _exit_status(result)


# files


def cmd_files_ls(wb: Workbench, args: argparse.Namespace) -> int:
    entries = wb.session(args.session).files(args.path, recursive=args.recursive)
    if args.json:
        _print_json([vars(entry) for entry in entries])
    elif entries:
        _print_table(_file_rows(entries))
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty()


def cmd_files_put(wb: Workbench, args: argparse.Namespace) -> int:
    local = Path(args.local)
    remote = args.remote or local.name
    if remote.endswith("/"):
        remote += local.name
    entry = wb.session(args.session).upload(local, remote, progress=_progress(args))
    if args.json:
        _print_json(vars(entry))
    else:
        print(entry.path)
    return 0


def cmd_files_get(wb: Workbench, args: argparse.Namespace) -> int:
    target = wb.session(args.session).download(args.remote, args.local, progress=_progress(args))
    if args.json:
        _print_json({"path": str(target), "size": target.stat().st_size})
    else:
        print(target)
    return 0


def cmd_files_rm(wb: Workbench, args: argparse.Namespace) -> int:
    wb.session(args.session).remove(args.path, recursive=args.recursive)
    return 0


def cmd_files_archive(wb: Workbench, args: argparse.Namespace) -> int:
    target = wb.session(args.session).archive(args.local, path=args.path, progress=_progress(args))
    if args.json:
        _print_json({"path": str(target), "size": target.stat().st_size})
    else:
        print(target)
    return 0


def cmd_files_extract(wb: Workbench, args: argparse.Namespace) -> int:
    result = wb.session(args.session).upload_archive(args.zip, path=args.path, progress=_progress(args))
    if args.json:
        _print_json(result)
    else:
        print(f"{result['count']} files, {result['bytes']} bytes")
    return 0


# library


def cmd_library_ls(wb: Workbench, args: argparse.Namespace) -> int:
    entries = wb.library.files(args.path, recursive=args.recursive)
    if args.json:
        _print_json([vars(entry) for entry in entries])
    elif entries:
        _print_table(_file_rows(entries))
    return 0


def cmd_library_put(wb: Workbench, args: argparse.Namespace) -> int:
    local = Path(args.local)
    remote = args.remote or local.name
    if remote.endswith("/"):
        remote += local.name
    _print_entry(wb.library.upload(local, remote, progress=_progress(args)), args)
    return 0


def cmd_library_get(wb: Workbench, args: argparse.Namespace) -> int:
    target = wb.library.download(args.remote, args.local, progress=_progress(args))
    if args.json:
        _print_json({"path": str(target), "size": target.stat().st_size})
    else:
        print(target)
    return 0


def cmd_library_mv(wb: Workbench, args: argparse.Namespace) -> int:
    _print_entry(wb.library.rename(args.path, args.new_path), args)
    return 0


def cmd_library_rm(wb: Workbench, args: argparse.Namespace) -> int:
    wb.library.remove(args.path, recursive=args.recursive)
    return 0


def cmd_library_publish(wb: Workbench, args: argparse.Namespace) -> int:
    _print_entry(wb.library.publish(args.session, args.path, args.target), args)
    return 0


def _print_entry(entry: FileEntry, args: argparse.Namespace) -> None:
    if args.json:
        _print_json(vars(entry))
    else:
        print(entry.path)


# notebook, vars


def cmd_notebook(wb: Workbench, args: argparse.Namespace) -> int:
    text = wb.session(args.session).notebook()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _variable_rows(variables: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("NAME", "TYPE", "SIZE", "SHAPE", "VALUE")]
    for item in variables:
        shape = "x".join(str(n) for n in item.get("shape", [])) or str(item.get("len", ""))
        size = "" if item.get("size") is None else str(item["size"])
        value = (item.get("repr") or "").replace("\n", " ")[:60]
        if item.get("columns"):
            value = ", ".join(f"{c['name']}:{c['dtype']}" for c in item["columns"])[:60]
        rows.append((item["name"], item["type"], size, shape, value))
    return rows


def cmd_vars(wb: Workbench, args: argparse.Namespace) -> int:
    answer = wb.session(args.session).variables(wait=args.wait)
    if args.json:
        _print_json(answer)
    elif answer["variables"]:
        _print_table(_variable_rows(answer["variables"]))
        if answer.get("truncated"):
            print(f"({answer['count']} variables in all)", file=sys.stderr)
    return 0


# attach


def _socket_problem(info: dict[str, Any]) -> str | None:
    """Why a Jupyter client on this host cannot reach the kernel, if it cannot."""
    if info.get("transport") != "ipc":
        return None
    socket = f"{info['ip']}-{info['shell_port']}"
    if os.access(socket, os.R_OK | os.W_OK):
        return None
    return (
        f"cannot open the kernel's socket {socket}: attach works on the server host, as root or as the "
        "server's user; from another host, run it there: ssh -t HOST workbench attach SESSION"
    )


@contextlib.contextmanager
def _private_json(data: dict[str, Any]) -> Iterator[Path]:
    """``data`` in a temporary file only this user can read (it holds the kernel's HMAC key)."""
    descriptor, name = tempfile.mkstemp(prefix="workbench-attach-", suffix=".json")
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(data, stream)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _run_console(connection_file: Path, extra: list[str]) -> int:
    """``jupyter console --existing``; Ctrl-C belongs to the console while it runs."""
    command = [sys.executable, "-m", "jupyter_console", "--existing", str(connection_file), *extra]
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_attach(wb: Workbench, args: argparse.Namespace) -> int:
    info = wb.session(args.session).connection_info()
    problem = _socket_problem(info)
    if problem is not None:
        print(f"workbench: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"Attached to {args.session}: API users share this kernel. Leave with Ctrl-D or `exit` "
        "(the kernel keeps running).",
        file=sys.stderr,
    )
    with _private_json(info) as path:
        return _run_console(path, args.console_args)


# Running a command


def _run(args: argparse.Namespace) -> int:
    """Run the client command ``args.client``, turning API and network errors into messages."""
    command: Command = args.client
    try:
        with Workbench(args.url, args.token) as wb:
            return command(wb, args)
    except Unauthorized as error:
        print(f"workbench: {error.message} (give --token or set WORKBENCH_TOKEN)", file=sys.stderr)
    except WorkbenchAPIError as error:
        print(f"workbench: {error.message} [{error.status} {error.code}]", file=sys.stderr)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (httpx.TransportError, websockets.exceptions.WebSocketException) as error:
        print(
            f"workbench: cannot talk to the server at {args.url or default_url()}: {error}", file=sys.stderr
        )
    except OSError as error:
        print(f"workbench: {error}", file=sys.stderr)
    return EXIT_FAILED


def _options(json_output: bool) -> argparse.ArgumentParser:
    """The options every client command takes (and ``--json`` where there is something to print)."""
    parent = argparse.ArgumentParser(add_help=False)
    server = parent.add_argument_group("server")
    server.add_argument("--url", help=f"server URL [WORKBENCH_URL, default {DEFAULT_URL}]")
    server.add_argument(
        "--token", help="bearer token [WORKBENCH_TOKEN, else the admin-token file of a local server]"
    )
    if json_output:
        parent.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    return parent


def _sentence(summary: str) -> str:
    return summary[0].upper() + summary[1:] + "."


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        msg = f"not a JSON object: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _command(
    group: Subcommands, name: str, run: Command, summary: str, *, json_output: bool = False, **extra: Any
) -> argparse.ArgumentParser:
    description = extra.pop("description", _sentence(summary))
    parser = group.add_parser(
        name, help=summary, description=description, parents=[_options(json_output)], **extra
    )
    parser.set_defaults(run=_run, client=run)
    return parser


def _session_command(
    group: Subcommands, name: str, run: Command, summary: str, **options: Any
) -> argparse.ArgumentParser:
    """A client command about one session: its first argument is SESSION."""
    parser = _command(group, name, run, summary, **options)
    parser.add_argument("session", metavar="SESSION", help="session id")
    return parser


def _group(commands: Subcommands, name: str, summary: str) -> Subcommands:
    parser = commands.add_parser(name, help=summary, description=_sentence(summary))
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _add_sessions(commands: Subcommands) -> None:
    group = _group(commands, "sessions", "list, create and remove sessions")
    _command(group, "ls", cmd_sessions_ls, "list sessions", json_output=True)
    create = _command(
        group, "create", cmd_sessions_create, "create a session and print its id", json_output=True
    )
    create.add_argument("--memory-mb", type=int, help="memory limit (capped by the server)")
    create.add_argument("--cpus", type=float, help="CPU quota (capped by the server)")
    create.add_argument("--idle-timeout", type=int, help="seconds idle before the kernel is stopped")
    create.add_argument("--metadata", type=_json_object, help="a JSON object kept with the session")
    rm = _command(group, "rm", cmd_sessions_rm, "delete sessions (kernel removed, workspace wiped)")
    rm.add_argument("sessions", nargs="+", metavar="SESSION")
    _session_command(group, "interrupt", cmd_sessions_interrupt, "interrupt the running code")
    _session_command(group, "restart", cmd_sessions_restart, "fresh kernel: variables gone, files kept")


def _add_exec(commands: Subcommands) -> None:
    parser = _session_command(
        commands,
        "exec",
        cmd_exec,
        "run code in a session, streaming its output",
        json_output=True,
        description="Run CODE (or standard input, with -) in SESSION's kernel. Output is printed as it "
        "comes: stdout to stdout; stderr, tracebacks and notices to stderr. Ctrl-C interrupts the code.",
        epilog=f"exit status: 0 ok, {EXIT_FAILED} the code raised (or an API error), {EXIT_TIMEOUT} timeout, "
        f"{EXIT_INTERRUPTED} interrupted. Example: workbench exec $SID 'df.describe()'",
    )
    parser.add_argument("code", metavar="CODE", help="Python code, or - to read it from standard input")
    parser.add_argument("--timeout", type=float, help="seconds before the server interrupts the code")


def _add_files(commands: Subcommands) -> None:
    group = _group(commands, "files", "list, upload, download and delete files of a session's workspace")
    ls = _session_command(group, "ls", cmd_files_ls, "list a workspace directory", json_output=True)
    ls.add_argument("path", metavar="PATH", nargs="?", default="", help="directory (default: /data)")
    ls.add_argument("-r", "--recursive", action="store_true", help="list subdirectories too")
    put = _session_command(group, "put", cmd_files_put, "upload a file", json_output=True)
    put.add_argument("local", metavar="LOCAL", help="the local file")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="workspace path (default: LOCAL's name)")
    get = _session_command(group, "get", cmd_files_get, "download a file", json_output=True)
    get.add_argument("remote", metavar="REMOTE", help="workspace path")
    get.add_argument("local", metavar="LOCAL", nargs="?", help="file or directory (default: here)")
    rm = _session_command(group, "rm", cmd_files_rm, "delete a file (a directory needs -r)")
    rm.add_argument("path", metavar="PATH")
    rm.add_argument("-r", "--recursive", action="store_true", help="delete a directory and its contents")
    _add_archives(group)


def _add_archives(group: Subcommands) -> None:
    """``files archive`` and ``files extract``."""
    archive = _session_command(group, "archive", cmd_files_archive, "download the workspace as a zip",
                               json_output=True)  # fmt: skip
    archive.add_argument("local", metavar="LOCAL", nargs="?", help="file or directory (default: here)")
    archive.add_argument("--path", default="", help="a folder of the workspace (default: all of it)")
    extract = _session_command(group, "extract", cmd_files_extract, "extract a zip into the workspace "
                               "(all or nothing)", json_output=True)  # fmt: skip
    extract.add_argument("zip", metavar="ZIP", help="the local zip file")
    extract.add_argument("--path", default="", help="target folder in the workspace (default: its root)")


def _add_library(commands: Subcommands) -> None:
    group = _group(commands, "library", "the tenant's file library, read-only at /library in every session")
    ls = _command(group, "ls", cmd_library_ls, "list the library", json_output=True)
    ls.add_argument("path", metavar="PATH", nargs="?", default="", help="directory (default: the top)")
    ls.add_argument("-r", "--recursive", action="store_true", help="list subdirectories too")
    put = _command(group, "put", cmd_library_put, "upload a file", json_output=True)
    put.add_argument("local", metavar="LOCAL", help="the local file")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="library path (default: LOCAL's name)")
    get = _command(group, "get", cmd_library_get, "download a file", json_output=True)
    get.add_argument("remote", metavar="REMOTE", help="library path")
    get.add_argument("local", metavar="LOCAL", nargs="?", help="file or directory (default: here)")
    mv = _command(group, "mv", cmd_library_mv, "rename or move a file", json_output=True)
    mv.add_argument("path", metavar="PATH")
    mv.add_argument("new_path", metavar="NEW_PATH")
    rm = _command(group, "rm", cmd_library_rm, "delete a file (a directory needs -r)")
    rm.add_argument("path", metavar="PATH")
    rm.add_argument("-r", "--recursive", action="store_true", help="delete a directory and its contents")
    summary = "copy a session's file into the library"
    publish = _session_command(group, "publish", cmd_library_publish, summary, json_output=True)
    publish.add_argument("path", metavar="PATH", help="the file in the session's workspace")
    publish.add_argument("target", metavar="TARGET", nargs="?", help="library path (default: PATH's name)")


def _add_attach(commands: Subcommands) -> None:
    parser = _session_command(
        commands,
        "attach",
        cmd_attach,
        "open jupyter console on a session's kernel (admin, on the server host)",
        description="Open `jupyter console --existing` on SESSION's live kernel, shared with API users "
        "(variables are visible both ways). Needs the admin token and runs on the server host (the kernel "
        "speaks over Unix sockets there). From another machine: ssh -t HOST workbench attach SESSION.",
    )
    parser.add_argument(
        "console_args",
        nargs=argparse.REMAINDER,
        help="more arguments for jupyter console, e.g. --simple-prompt",
    )


def _add_runs(commands: Subcommands) -> None:
    notebook = _session_command(
        commands, "notebook", cmd_notebook, "print a session's history as a Jupyter notebook (.ipynb)",
        epilog="Example: workbench notebook $SID > analysis.ipynb",
    )  # fmt: skip
    notebook.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    variables = _session_command(
        commands, "vars", cmd_vars, "list a session's variables (name, type, size, shape, value)",
        json_output=True,
    )  # fmt: skip
    variables.add_argument("--wait", type=float, help="seconds to wait for a running execution")


def add_commands(commands: Subcommands) -> None:
    """Add ``sessions``, ``exec``, ``files``, ``attach``, ``notebook`` and ``vars`` to ``workbench``."""
    _add_sessions(commands)
    _add_exec(commands)
    _add_files(commands)
    _add_attach(commands)
    _add_library(commands)
    _add_runs(commands)
