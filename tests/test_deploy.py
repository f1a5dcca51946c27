"""docs/deploy.md executed (issue 18): the blocks marked ``<!-- test: NAME -->`` run in
bash, as root, with the guide's variables pointed at a temporary root and a throw-away
system user: user, folders, staff CA, the certificate hook, key, secrets, configuration,
doctor, first account. Then ``madoguchi serve`` runs as that user with that configuration
(loopback ports through MADOGUCHI_* variables) and one whole consultation goes through it:
staff login with the issued office-PC certificate, SMS through the real Kannel, a citizen
with media, a recording on disk, the end; then ``retention --once``. Both run as the units
would as far as a process can arrange it: a mount namespace with ProtectSystem=strict,
ReadWritePaths, PrivateTmp and ProtectHome; the service user, no_new_privs, only
CAP_NET_BIND_SERVICE in the bounding set, umask 077, the unit's ``SystemCallFilter=`` as
a seccomp allow-list, and for retention ``MemoryDenyWriteExecute=yes`` as PR_SET_MDWE. The service user's ``madoguchi`` is the suite's packages
on Debian's /usr/bin/python3, production's interpreter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sysconfig
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from madoguchi.bench.media import Clip, citizen_client, staff_client
from madoguchi.certs import DevCerts
from recorder.layout import segment_files
from tests.fixtures.kannel import Kannel
from tests.fixtures.ports import free_port, stop_process, wait_for
from tests.fixtures.production import ProductionSite
from tests.fixtures.server import ServerHandle, StaffClient
from tests.fixtures.wait import wait_until
from tests.test_consultation_media import join_call
from tests.test_signalling_api import Citizen, create, receive

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "deploy.md"
DEBIAN_PYTHON = "/usr/bin/python3"
PR_SET_MDWE, MDWE_REFUSE_EXEC_GAIN = 65, 1
STEPS = ("user", "folders", "kek", "secrets", "config", "certificate-hook", "staff-ca",
         "doctor", "first-account")


def guide_block(name: str) -> str:
    found = re.search(rf"<!-- test: {re.escape(name)} -->\n```sh\n(.*?)```", GUIDE.read_text(),
                      re.S)
    assert found, f"docs/deploy.md has no block marked <!-- test: {name} -->"
    return found.group(1)


def test_guide_has_every_step_and_its_alert_links_work() -> None:
    for name in ("variables", *STEPS):
        guide_block(name)
    readme = (REPO / "README.md").read_text()
    alerts = set(re.findall(r"alert: (\w+)", (REPO / "config/prometheus/alerts.yml").read_text()))
    linked = re.findall(r"\[(\w+)\]\(\.\./README\.md#(\w+)\)", GUIDE.read_text())
    assert len(linked) >= 10
    for alert, anchor in linked:
        assert alert in alerts and anchor == alert.lower(), alert
        assert f"#### {alert}\n" in readme, alert
    assert "### Alerts: what they mean and what to do" in readme


def _mdwe_supported() -> bool:
    """Asked in a child: the rule cannot be lifted from the process that sets it."""
    code = (f"import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, "
            f"{MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)")
    return subprocess.run([DEBIAN_PYTHON, "-c", code], timeout=30).returncode == 0


@dataclasses.dataclass
class Deployment:
    root: Path
    user: str
    site: ProductionSite
    env: dict[str, str]
    kannel: Kannel
    mdwe: bool = False

    @property
    def variables(self) -> str:
        return "".join(f'{k}="{v}"\n' for k, v in self.paths.items())

    @property
    def paths(self) -> dict[str, str]:
        return {"SVC": self.user, "APP": str(self.root / "opt/madoguchi"),
                "ETC": str(self.root / "etc/madoguchi"),
                "DATA": str(self.root / "var/lib/madoguchi"), "NAME": self.site.host,
                "LIVE": str(self.root / "letsencrypt/live" / self.site.host),
                "HOOKS": str(self.root / "letsencrypt/renewal-hooks/deploy")}

    def path(self, name: str) -> Path:
        return Path(self.paths[name])

    def syscalls(self, unit: str) -> Path:
        """A file the service user can read: the system calls and address families
        ``unit`` allows."""
        path = self.root / f"{unit}.syscalls"
        path.write_text("\n".join(unit_syscalls(unit)) + "\nfamilies: "
                        + " ".join(str(f) for f in unit_address_families(unit)) + "\n")
        path.chmod(0o644)
        return path

    def step(self, name: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        script = "set -euo pipefail\n" + self.variables + guide_block(name)
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              env=self.env, timeout=120)
        assert done.returncode == 0 or not check, f"step {name}:\n{done.stdout}\n{done.stderr}"
        return done


# $APP/.venv/bin/madoguchi's Python side: our packages only (python3 -S: not Debian's own
# dist-packages with their older cryptography), and as much of the unit's sandbox as a
# process can give itself: MDG_TEST_MDWE=1 is MemoryDenyWriteExecute=yes (PR_SET_MDWE),
# MDG_TEST_SYSCALLS=FILE is SystemCallFilter= (an allow-list, EPERM otherwise, as
# SystemCallErrorNumber=EPERM) and RestrictAddressFamilies= (socket() for those families
# only), loaded with Debian's python3-seccomp.
SANDBOXED_MAIN = """\
import ctypes, os, sys
if os.environ.get("MDG_TEST_MDWE") == "1" and ctypes.CDLL(None).prctl(65, 1, 0, 0, 0):
    sys.exit("PR_SET_MDWE refused")
if os.environ.get("MDG_TEST_SYSCALLS"):
    sys.path.append("/usr/lib/python3/dist-packages")
    import errno, seccomp
    sys.path.pop()
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    names, _, families = open(os.environ["MDG_TEST_SYSCALLS"]).read().partition("families:")
    for name in names.split():
        if name == "socket" and families.split():
            continue  # RestrictAddressFamilies=: only these, EAFNOSUPPORT otherwise
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture
    for family in families.split():
        rules.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, int(family)))
    rules.load()
import site
site.addsitedir(sys.argv.pop(1))
sys.path.insert(0, sys.argv.pop(1))
sys.argv[0] = "madoguchi"
from madoguchi.cli import main
sys.exit(main())
"""


def _install_app(app: Path) -> None:
    """``$APP/.venv/bin/madoguchi``: this checkout and the suite's packages on Debian's
    interpreter (production's), with the sandbox switches above."""
    bin_dir = app / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "madoguchi_main.py").write_text(SANDBOXED_MAIN)
    binary = bin_dir / "madoguchi"
    binary.write_text(f"#!/bin/sh\nexec {DEBIAN_PYTHON} -S {bin_dir / 'madoguchi_main.py'} "
                      f'{sysconfig.get_paths()["purelib"]} {REPO} "$@"\n')
    binary.chmod(0o755)


def unit_address_families(unit: str) -> list[int]:
    """``RestrictAddressFamilies=`` of ``unit`` as socket() family numbers."""
    text = (REPO / "config" / "systemd" / unit).read_text()
    names = [v for line in text.splitlines() if line.startswith("RestrictAddressFamilies=")
             for v in line.split("=", 1)[1].split()]
    assert names and not any(n.startswith("~") for n in names), names
    return [int(getattr(socket, name)) for name in names]


def unit_syscalls(unit: str) -> list[str]:
    """The system calls ``SystemCallFilter=`` of ``unit`` allows, groups expanded with
    ``systemd-analyze syscall-filter`` (this machine's systemd)."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in listing.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.strip() and not line.strip().startswith("#") and current:
            groups[current].append(line.strip())
    names: set[str] = set()

    def add(item: str) -> None:
        if item.startswith("@"):
            for member in groups[item]:
                add(member)
        elif item not in names:
            names.add(item)

    text = (REPO / "config" / "systemd" / unit).read_text()
    entries = [v for line in text.splitlines() if line.startswith("SystemCallFilter=")
               for v in line.split("=", 1)[1].split()]
    assert entries and not any(e.startswith("~") for e in entries), entries
    for entry in ["@default", *entries]:  # @default is always allowed
        add(entry)
    return sorted(names)


@pytest.fixture
def deployment(production_site: ProductionSite, kannel: Kannel) -> Iterator[Deployment]:
    for tool in ("adduser", "runuser", "setpriv", DEBIAN_PYTHON):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (Debian 12 has it)")
    if not list(Path("/usr/lib/python3/dist-packages").glob("seccomp.*.so")):
        pytest.fail("python3-seccomp is missing (Debian package; scripts/test installs it)")
    if os.geteuid() != 0:
        pytest.skip("the install steps run as root (adduser, runuser)")
    root = Path(f"/tmp/madoguchi-prod-deploy-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o755)
    user = f"mdgprod{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADOGUCHI_")}
    # The "public" CA, where the service user can read it (as the system's CA store).
    trust = root / "trusted-cas.pem"
    shutil.copy(production_site.trust, trust)
    trust.chmod(0o644)
    env["SSL_CERT_FILE"] = str(trust)
    d = Deployment(root, user, production_site, env, kannel, _mdwe_supported())
    _install_app(d.path("APP"))
    try:
        yield d
    finally:
        subprocess.run(["userdel", user], capture_output=True, timeout=30)
        subprocess.run(["groupdel", user], capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _overrides(d: Deployment, ports: dict[str, int]) -> dict[str, str]:
    """What doctor sees changed in the guide's configuration: free ports (the guide's 443,
    8444, 9464 may be taken here), the test Kannel, no TURN host outside this machine."""
    host = d.site.host
    return {
        "MADOGUCHI_SERVER_PUBLIC_URL": f"https://{host}:{ports['citizen']}",
        "MADOGUCHI_SERVER_CITIZEN_PORT": str(ports["citizen"]),
        "MADOGUCHI_SERVER_STAFF_PORT": str(ports["staff"]),
        "MADOGUCHI_SERVER_STAFF_PUBLIC_URL": f"https://{host}:{ports['staff']}",
        "MADOGUCHI_OPERATOR_PORT": str(ports["operator"]),
        "MADOGUCHI_SMS_KANNEL_URL": d.kannel.sendsms_url,
        "MADOGUCHI_SMS_KANNEL_USERNAME": d.kannel.username,
        "MADOGUCHI_TURN_ENABLED": "false",
    }


def _loopback(ports: dict[str, int]) -> dict[str, str]:
    """Only for serve: every listener and the media on loopback (doctor sees the guide's
    0.0.0.0 and public media address, and would rightly fail 127.0.0.1 media: no phone
    reaches it). Plain HTTP on the loopback operator listener, as the guide's checks allow."""
    return {
        "MADOGUCHI_SERVER_CITIZEN_HOST": "127.0.0.1",
        "MADOGUCHI_SERVER_STAFF_HOST": "127.0.0.1",
        "MADOGUCHI_OPERATOR_HOST": "127.0.0.1",
        "MADOGUCHI_OPERATOR_TLS": "false",
        "MADOGUCHI_SMS_DLR_BASE_URL": f"http://127.0.0.1:{ports['operator']}",
        "MADOGUCHI_SFU_HOST_ADDRESSES": "127.0.0.1",
        "MADOGUCHI_SFU_ALLOWED_CANDIDATE_NETWORKS": "127.0.0.1/32",
        "MADOGUCHI_SFU_UDP_PORT_MIN": "0",
        "MADOGUCHI_SFU_UDP_PORT_MAX": "0",
    }


def as_service(user: str, writable: Path, keep: list[Path]) -> list[str]:
    """Run as the unit would, as far as a process can arrange it.

    In a mount namespace of its own (private propagation: nothing leaks out):
    PrivateTmp=yes (fresh /tmp and /var/tmp; the folders of ``keep`` that lived there are
    bound back in), ProtectSystem=strict + ReadWritePaths (everything read-only but
    ``writable``), ProtectHome=yes (empty /root and /home). Then setpriv: the service user,
    no_new_privs, a bounding set of CAP_NET_BIND_SERVICE only (none raised: high ports).
    """
    lines = ["set -e"]
    kept = [k.resolve() for k in keep if k.resolve().is_relative_to("/tmp")
            or k.resolve().is_relative_to("/var/tmp")]
    for fd, path in enumerate(kept, start=3):
        lines.append(f'exec {fd}<"{path}"')
    lines += ["mount -t tmpfs -o mode=1777 tmpfs /tmp", "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
    for fd, path in enumerate(kept, start=3):
        lines += [f'mkdir -p "{path}"', f'mount --no-canonicalize --rbind /proc/self/fd/{fd} "{path}"',
                  f"exec {fd}<&-"]
    lines += [f'mount --bind "{writable}" "{writable}"', "mount -o remount,bind,ro /"]
    lines += [f'mount -o remount,bind,ro "{path}"' for path in kept]
    lines += ["for home in /root /home; do",
              "  if [ -d $home ]; then mount -t tmpfs -o ro,mode=0755 tmpfs $home; fi",
              "done", 'exec "$@"']
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            "\n".join(lines), "sh",
            "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
            "--no-new-privs", "--bounding-set=-all,+net_bind_service", "--inh-caps=-all", "--"]


def _mounts(pid: int) -> dict[str, tuple[str, str]]:
    """Mount point -> (ro/rw, file system type) as process ``pid`` sees them (the last
    mount on a path wins, as for the process)."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        out[parts[4]] = (parts[5].split(",")[0], rest.split()[0])
    return out


def _issued_client(d: Deployment, out: str, tmp: Path) -> tuple[Path, Path]:
    p12 = Path(re.search(r"\.p12 file:\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    password = re.search(r"\.p12 password:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    key, cert, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), password.encode())
    assert key is not None and cert is not None
    cert_path, key_path = tmp / "office-pc.pem", tmp / "office-pc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _private_tree(folder: Path, owner: int) -> list[str]:
    """Files and folders under ``folder`` not owned by ``owner`` or open to group/others."""
    bad = []
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        if st.st_uid != owner or stat.S_IMODE(st.st_mode) & 0o077:
            bad.append(f"{path} uid={st.st_uid} mode={stat.S_IMODE(st.st_mode):o}")
    return bad


def test_install_steps_then_serve_and_call(deployment: Deployment, tmp_path: Path,
                                                 vp8_clip: Clip, vp8_clip_b: Clip) -> None:
    d = deployment
    kannel = d.kannel
    d.step("user")
    uid = int(subprocess.run(["id", "-u", d.user], capture_output=True, text=True,
                             check=True).stdout)
    if subprocess.run(["runuser", "-u", d.user, "--", "test", "-r", str(REPO / "madoguchi/cli.py")],
                      timeout=30).returncode != 0:
        pytest.skip(f"the service user cannot read this checkout ({REPO})")
    d.step("folders")
    for name in ("ETC", "DATA"):
        assert d.path(name).is_dir()
    assert stat.S_IMODE(d.path("DATA").stat().st_mode) == 0o700
    assert d.path("DATA").stat().st_uid == uid
    d.step("kek")
    d.step("secrets")
    # The guide: "put the same Kannel password in kannel.conf" (here: the test Kannel's).
    secrets_env = d.path("ETC") / "secrets.env"
    assert stat.S_IMODE(secrets_env.stat().st_mode) == 0o600
    secrets_env.write_text(re.sub(r"(?m)^MADOGUCHI_SMS_KANNEL_PASSWORD=.*$",
                                  f"MADOGUCHI_SMS_KANNEL_PASSWORD={kannel.password}",
                                  secrets_env.read_text()))
    d.step("config")
    # What certbot leaves behind, then the deploy hook of the guide.
    live = d.path("LIVE")
    live.mkdir(parents=True)
    shutil.copy(d.site.sections["tls"]["server_cert"], live / "fullchain.pem")
    shutil.copy(d.site.sections["tls"]["server_key"], live / "privkey.pem")
    d.step("certificate-hook")
    assert os.access(d.path("HOOKS") / "madoguchi", os.X_OK)  # certbot runs it on renewal
    key = (d.path("ETC") / "tls" / "privkey.pem").stat()
    assert key.st_uid == uid and stat.S_IMODE(key.st_mode) == 0o600
    issued = d.step("staff-ca").stdout
    ports = {"citizen": free_port(), "staff": free_port(), "operator": free_port()}
    d.env.update(_overrides(d, ports))

    doctor = d.step("doctor", check=False)
    # Nothing fails but, on a machine whose own clock is unsynchronised, the clock line.
    failed = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert not [f for f in failed if "clock.synchronised" not in f], doctor.stdout
    assert doctor.returncode == (1 if failed else 0), doctor.stdout + doctor.stderr
    assert f"verifies for {d.site.host}" in doctor.stdout
    assert "accepts our credentials" in doctor.stdout  # sms.gateway against the real Kannel
    assert "(mode 600)" in doctor.stdout
    assert "OK      operator.tls: operator listener over TLS" in doctor.stdout  # the guide's

    account = d.step("first-account").stdout
    password = re.search(r"^Password: (\S+)", account, re.M).group(1)  # type: ignore[union-attr]

    # serve as the service user, its environment as systemd would give it (EnvironmentFile)
    env = d.env | _loopback(ports) | {
        "MDG_TEST_SYSCALLS": str(d.syscalls("madoguchi.service"))}
    for line in secrets_env.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*as_service(d.user, d.path("DATA"), [d.root, REPO]),
             str(d.path("APP") / ".venv/bin/madoguchi"), "serve",
             "--config", str(d.path("ETC") / "madoguchi.toml")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=lambda: os.umask(0o077))  # UMask=0077 of the unit
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}:\n"
                                     + log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['operator']}/healthz",
                                            timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout=60, what="serve /healthz")
        status = Path(f"/proc/{proc.pid}/status").read_text()  # all exec'd: the server
        assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), status
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        assert re.search(r"^CapBnd:\s+0000000000000400$", status, re.M)  # CAP_NET_BIND_SERVICE
        assert re.search(r"^CapEff:\s+0000000000000000$", status, re.M)
        assert re.search(r"^Seccomp:\s+2$", status, re.M)  # the unit's system call filter
        mounts = _mounts(proc.pid)
        assert mounts["/"][0] == "ro" and mounts[str(d.path("DATA"))][0] == "rw"
        assert mounts["/tmp"] == ("rw", "tmpfs") and mounts["/root"] == ("ro", "tmpfs")
        cert, key = _issued_client(d, issued, tmp_path)
        certs = DevCerts(dir=tmp_path, ca=d.site.trust, ca_key=tmp_path, server_cert=tmp_path,
                         server_key=tmp_path, staff_ca=tmp_path, staff_ca_key=tmp_path,
                         staff_crl=tmp_path, client_p12=tmp_path, client_cert=cert,
                         client_key=key, p12_password="")
        server = ServerHandle(proc=proc, config_path=d.path("ETC") / "madoguchi.toml",
                              data_dir=d.path("DATA"), certs=certs,
                              citizen_port=ports["citizen"], staff_port=ports["staff"],
                              operator_port=ports["operator"], log_path=log_path,
                              host=d.site.host)
        asyncio.run(_whole_call(server, password, vp8_clip, vp8_clip_b))
    except BaseException:
        print(log_path.read_text(errors="replace")[-6000:])  # shown with the failure
        raise
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # runuser and the server (one session)
        stop_process(proc, timeout=15)
    assert '"server_stopped"' in log_path.read_text(errors="replace")  # a clean stop
    # Everything the server wrote is the service user's and private (umask 077 + its own modes).
    assert _private_tree(d.path("DATA"), uid) == []

    # madoguchi-retention.service has MemoryDenyWriteExecute=yes: one run under the rule.
    retention = subprocess.run(
        [*as_service(d.user, d.path("DATA"), [d.root, REPO]),
         str(d.path("APP") / ".venv/bin/madoguchi"), "retention",
         "--once", "--config", str(d.path("ETC") / "madoguchi.toml")],
        capture_output=True, text=True, timeout=120,
        env=env | {"MDG_TEST_MDWE": "1" if d.mdwe else "0",
                   "MDG_TEST_SYSCALLS": str(d.syscalls("madoguchi-retention.service"))},
        preexec_fn=lambda: os.umask(0o077))
    assert retention.returncode == 0, retention.stdout + retention.stderr
    assert "PR_SET_MDWE refused" not in retention.stderr
    if not d.mdwe:
        pytest.skip("this kernel has no PR_SET_MDWE: retention ran without write-xor-execute")


async def _whole_call(server: ServerHandle, first_password: str, clip: Clip,
                      talk: Clip) -> None:
    """The citizen site's root page, then: login (first password changed), SMS, call with
    media and recording, end."""
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(server.certs.ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.get(server.citizen_url + "/") as r:
            assert r.status == 200 and "窓口 映像相談" in await r.text()
    async with StaffClient(server) as staff:
        await staff.login(password=first_password)
        await staff.post("/api/password", {"old_password": first_password,
                                           "new_password": server.password})
        await staff.login()
        c = await create(staff, "080-3141-5926")
        assert c["link"].startswith(server.citizen_url + "/c/")
        phone = Citizen(server)
        citizen = citizen_client(clip)
        viewer = staff_client("VP8", talk=talk)
        try:
            ws = await join_call(phone, citizen, c["link"])
            staff_ws = await staff.session.ws_connect(  # type: ignore[union-attr]
                server.staff_url.replace("https", "wss") + "/ws/staff",
                headers={"Origin": server.staff_url})
            await receive(staff_ws, "consultations")
            await staff_ws.send_json({"type": "view", "id": c["id"], "sdp": await viewer.offer()})
            await viewer.accept((await receive(staff_ws, "answer"))["sdp"])
            await viewer.collectors["video"].wait_frames(30, timeout=20)
            folder = server.data_dir / "recordings" / c["id"]
            await wait_until(lambda: segment_files(folder), what="a recording segment")
            await staff.post(f"/api/consultations/{c['id']}/end")
            assert (await receive(ws, "ended"))["reason"] == "staff"
            await staff_ws.close()
        finally:
            await citizen.close()
            await viewer.close()
            await phone.close()
