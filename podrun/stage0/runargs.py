"""Parsing ``podrun run``/``prepare`` arguments the way rkt does: position-sensitive.

    podrun run [POD FLAGS] IMAGE [APP FLAGS] [-- ARG… ---] [IMAGE [APP FLAGS] …]

App flags apply to the image they follow; pod flags may stand anywhere; ``--``
starts the app's arguments, which run until ``---`` or the end. A flag takes its
value as ``--flag=value`` or ``--flag value``. Anything unknown is an error (exit
254) naming the flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podrun.errors import UsageError

# flag → takes a value? (False: a boolean that also accepts =true/=false)
APP_FLAGS: dict[str, bool] = {
    "--name": True, "--exec": True, "--environment": True, "--user": True, "--group": True,
    "--supplementary-gids": True, "--working-dir": True, "--readonly-rootfs": False,
    "--mount": True, "--memory": True, "--cpu": True, "--cpu-shares": True,
    "--caps-retain": True, "--caps-remove": True, "--seccomp": True,
    "--oom-score-adj": True, "--annotation": True, "--user-annotation": True,
    "--user-label": True, "--signature": True, "--pids-limit": True,
}
REPEATABLE_APP = {"--environment", "--mount", "--annotation", "--user-annotation",
                  "--user-label"}

POD_FLAGS: dict[str, bool] = {
    "--volume": True, "--hostname": True, "--set-env": True, "--set-env-file": True,
    "--interactive": False, "--no-overlay": False, "--net": True, "--stage1-name": True,
    "--stage1-path": True, "--stage1-flavor": True, "--cgroup-parent": True,
    "--stop-timeout": True, "--pod-manifest": True, "--pod": True, "--uuid-file-save": True,
    "--pull-policy": True, "--quiet": False, "--sysctl": True, "--inherit-env": False,
    "--uuid-file": True,
}
REPEATABLE_POD = {"--volume", "--set-env", "--set-env-file", "--sysctl"}

GLOBAL_FLAGS: dict[str, bool] = {
    "--dir": True, "--local-config": True, "--system-config": True, "--debug": False,
    "--insecure-options": True, "--trust-keys-from-https": False,
}


@dataclass
class AppArgs:
    image: str
    flags: dict[str, list[str]] = field(default_factory=dict)
    args: list[str] | None = None

    def get(self, flag: str) -> str | None:
        vals = self.flags.get(flag)
        return vals[-1] if vals else None

    def all(self, flag: str) -> list[str]:
        return self.flags.get(flag, [])


@dataclass
class RunArgs:
    apps: list[AppArgs] = field(default_factory=list)
    pod: dict[str, list[str]] = field(default_factory=dict)
    globals: dict[str, list[str]] = field(default_factory=dict)

    def get(self, flag: str) -> str | None:
        vals = self.pod.get(flag)
        return vals[-1] if vals else None

    def all(self, flag: str) -> list[str]:
        return self.pod.get(flag, [])

    def flag(self, name: str) -> bool:
        return bool_value(name, self.get(name)) if name in self.pod else False


def bool_value(flag: str, value: str | None) -> bool:
    if value is None or value.lower() in ("", "true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"{flag}: expected true or false, not {value!r}")


def parse(tokens: list[str]) -> RunArgs:
    out = RunArgs()
    i = 0
    current: AppArgs | None = None
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            if current is None:
                raise UsageError("'--' must follow an image: IMAGE -- ARGS… ---")
            end = tokens.index("---", i + 1) if "---" in tokens[i + 1:] else len(tokens)
            current.args = tokens[i + 1:end]
            i = end + 1
            continue
        if tok == "---":
            raise UsageError("'---' without a matching 'IMAGE --'")
        if tok.startswith("--"):
            name, eq, val = tok.partition("=")
            table: dict[str, bool]
            if name in APP_FLAGS:
                if current is None:
                    raise UsageError(f"{name} applies to an app: put it after the image "
                                     "it belongs to")
                table, target = APP_FLAGS, current.flags
            elif name in POD_FLAGS:
                table, target = POD_FLAGS, out.pod
            elif name in GLOBAL_FLAGS:
                table, target = GLOBAL_FLAGS, out.globals
            else:
                raise UsageError(f"unknown flag {name}")
            takes = table[name]
            value: str | None
            if eq:
                value = val
            elif takes:
                if i + 1 >= len(tokens):
                    raise UsageError(f"{name} needs a value")
                i += 1
                value = tokens[i]
            else:
                value = ""
            if not takes:
                value = "true" if bool_value(name, value) else "false"
            repeat = REPEATABLE_APP | REPEATABLE_POD
            if name in target and name not in repeat and table is not GLOBAL_FLAGS:
                raise UsageError(f"{name} given twice"
                                 + (f" for {current.image}" if table is APP_FLAGS and current
                                    else ""))
            target.setdefault(name, []).append(value)
            i += 1
            continue
        if tok.startswith("-") and tok != "-":
            raise UsageError(f"unknown flag {tok}")
        current = AppArgs(tok)
        out.apps.append(current)
        i += 1
    if "--pod" in out.pod:
        out.pod.setdefault("--pod-manifest", []).extend(out.pod.pop("--pod"))
    return out
