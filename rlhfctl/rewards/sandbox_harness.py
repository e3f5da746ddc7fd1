"""The code sandbox's harness: copied into each sample's folder and run there, inside the sample's namespaces.

Standalone on purpose (standard library only): the sandbox's interpreter may not see rlhfctl. As the sample's
supervisor (`harness.py run`, process 1 of its PID namespace, so the program cannot signal it) it reads the tests,
deletes them from the folder, sets the rlimits, and runs each test as its own child process:
- an stdin/stdout test runs `solution.py` and compares what it printed with the expected output;
- an assert test runs `harness.py check`, which executes the program and then the test, and reports on a pipe,
  tagged with a nonce, only once the test itself ran: an early `sys.exit(0)`, `os._exit(0)` or a printed "passed"
  reports nothing and earns nothing.
Verdicts go, one JSON line per test, to an inherited fd: a file the parent opened outside the folder. The supervisor
drops every capability the tests' processes could inherit and is made non-dumpable (drop_privileges).
"""

import os
import sys

if sys.argv[1:2] != ["check"]:  # an assert test's process starts with less to import
    import ctypes
    import json
    import resource
    import secrets
    import signal
    import subprocess

MEMORY_WORDS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")
KILLED = (-9, -24)  # SIGKILL, SIGXCPU: the CPU rlimit's signals


def set_limits(memory_mb, nproc, file_mb):
    """Limits this process and every test's process share (the CPU limit is each test's: cpu_limit)."""
    mib = 1024 * 1024
    for name, value in ((resource.RLIMIT_AS, memory_mb * mib), (resource.RLIMIT_NPROC, nproc),
                        (resource.RLIMIT_FSIZE, file_mb * mib), (resource.RLIMIT_CORE, 0),
                        (resource.RLIMIT_NOFILE, 256)):
        resource.setrlimit(name, (value, value))


def cpu_limit(seconds):
    """A test process's CPU seconds, set between its fork and exec (this process has one thread), so this
    supervisor's own CPU time, which grows with the number of tests, is never limited."""
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    return apply


def tail(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def same_output(got, expected):
    def lines(text):
        return [line.rstrip() for line in text.strip("\n").splitlines()]
    return lines(got) == lines(expected)


def kill_group(process):
    """Kill a test's process group, and as process 1 of the sample's PID namespace, every other process in it
    (one that left its group with setsid too); outside a namespace (--sandbox-unsafe) only the group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)  # from process 1: all processes of its namespace but itself
        except OSError:
            pass
    process.wait()


def classify(code, stderr):
    if any(word in stderr for word in MEMORY_WORDS):
        return "memory"
    if code in KILLED:
        return "timeout"
    if code < 0:
        return "crash"
    if "SyntaxError" in stderr or "IndentationError" in stderr:
        return "error"
    return "fail"


def run_io(case, timeout, limit):
    stdin, expected = case
    with open("stdout.txt", "wb") as out, open("stderr.txt", "wb") as err:
        child = subprocess.Popen([sys.executable, "-I", "solution.py"], stdin=subprocess.PIPE, stdout=out,
                                 stderr=err, start_new_session=True, preexec_fn=limit)
        try:
            child.communicate(stdin.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(child)
            return "timeout"
        except (BrokenPipeError, OSError):
            child.wait()
        kill_group(child)  # anything it left running
    if child.returncode == 0 and same_output(tail("stdout.txt"), expected):
        return "pass"
    return classify(child.returncode, tail("stderr.txt"))


def run_assert(test, timeout, limit):
    nonce = secrets.token_hex(16)
    test_r, test_w = os.pipe()
    result_r, result_w = os.pipe()
    with open("stderr.txt", "wb") as err:
        child = subprocess.Popen([sys.executable, "-I", "harness.py", "check", str(test_r), str(result_w), nonce],
                                 pass_fds=(test_r, result_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True, preexec_fn=limit)
    os.close(test_r)
    os.close(result_w)
    with os.fdopen(test_w, "wb") as pipe:
        try:
            pipe.write(test.encode())
        except OSError:
            pass
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(child)
        os.close(result_r)
        return "timeout"
    kill_group(child)
    os.set_blocking(result_r, False)  # what the test wrote before it exited; a process it left holds no say
    with os.fdopen(result_r, "rb") as pipe:
        try:
            said = [line.split() for line in (pipe.read(1 << 16) or b"").decode("utf-8", "replace").splitlines()]
        except BlockingIOError:
            said = []
    verdicts = [words[1] for words in said if len(words) == 2 and words[0] == nonce]
    if verdicts:
        return {"exit": "error"}.get(verdicts[-1], verdicts[-1])
    return classify(child.returncode, tail("stderr.txt"))


def check(test_fd, result_fd, nonce):
    """One assert test in this process: the program, then the test; the verdict written to result_fd."""
    with os.fdopen(int(test_fd), "rb") as pipe:
        test = pipe.read().decode()
    out = int(result_fd)

    def report(verdict):
        os.write(out, f"{nonce} {verdict}\n".encode())

    namespace = {"__name__": "solution"}
    try:
        with open("solution.py") as f:
            exec(compile(f.read(), "solution.py", "exec"), namespace)
    except SystemExit:
        return report("exit")
    except MemoryError:
        return report("memory")
    except BaseException:  # noqa: BLE001 - the program failed before its tests ran
        return report("error")
    try:
        exec(compile(test, "test", "exec"), namespace)
    except MemoryError:
        return report("memory")
    except BaseException:  # noqa: BLE001 - a failed assert, a test that raises, a SystemExit inside the program
        return report("fail")
    report("pass")


def drop_privileges():
    """The tests' processes run as root of the sample's user namespace, whose capabilities could undo its mounts
    (remount / writable, unmount /tmp). Empty the bounding, inheritable and ambient sets, so an execve gains no
    capability, and set no_new_privs, so no setuid program does either; not dumpable, so the program cannot open
    this process's fds or read its memory. Outside a namespace, as a plain user, the drops fail and change nothing."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (fails past the last capability, and without CAP_SETPCAP)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()  # v3 header; eff, perm, inh x 2
    if libc.capget(header, data) == 0:
        data[2] = data[5] = 0
        libc.capset(header, data)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


def supervise(results_fd, timeout, cpu_s, memory_mb, nproc, file_mb):
    drop_privileges()
    with open("tests.json") as f:
        suite = json.load(f)
    os.remove("tests.json")  # the expected outputs are not the program's to read
    results = os.fdopen(int(results_fd), "w", buffering=1)
    set_limits(int(memory_mb), int(nproc), int(file_mb))
    limit = cpu_limit(int(cpu_s))
    for i, case in enumerate(suite["cases"]):
        try:
            run = run_io if suite["kind"] == "io" else run_assert
            status = run(case, float(timeout), limit)
        except OSError as exc:  # fork refused (the process cap), or the folder full
            status = "crash" if exc.errno != 12 else "memory"
        results.write(json.dumps({"i": i, "status": status}) + "\n")
    results.write(json.dumps({"done": True}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(*sys.argv[2:5])
    else:
        supervise(*sys.argv[2:8])
