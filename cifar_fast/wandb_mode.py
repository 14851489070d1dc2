"""Which W&B mode a run starts in, decided before wandb is imported: the user's WANDB_MODE, an API key (environment
or the netrc file `wandb login` writes), and whether the server answers at all, so a run without one goes offline at
once instead of waiting in wandb.init. Policy only: the logging itself is cifar_fast.callback.wandb."""
from __future__ import annotations

import configparser
import contextlib
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Seconds to wait for the server's answer before going offline: a choice, small next to a run; with no network the
# probe fails in ~0.05 s.
PROBE_TIMEOUT = 3.0

def base_url() -> str:
    "The W&B server: WANDB_BASE_URL, else the one `wandb login --host` saved in the settings file, else wandb.ai."
    if os.environ.get('WANDB_BASE_URL'): return os.environ['WANDB_BASE_URL']
    ini = configparser.ConfigParser()
    with contextlib.suppress(OSError, configparser.Error):
        ini.read(Path(os.environ.get('WANDB_CONFIG_DIR') or '~/.config/wandb').expanduser() / 'settings')
    return ini.get('default', 'base_url', fallback='https://api.wandb.ai')


def has_api_key(url: str | None = None) -> bool:
    "An API key in the environment, or in the netrc file for the W&B host (where `wandb login` stores it)."
    if os.environ.get('WANDB_API_KEY') or os.environ.get('WANDB_IDENTITY_TOKEN_FILE'): return True
    path = Path(os.environ.get('NETRC') or '~/.netrc').expanduser()
    host = urllib.parse.urlparse(url or base_url()).hostname
    try: return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError): return False


def server_answers(url: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    "Does the W&B server answer HTTP within `timeout` seconds (any status: it is up)?"
    try: urllib.request.urlopen((url or base_url()).rstrip('/') + '/healthz', timeout=timeout).close()
    except urllib.error.HTTPError: return True
    except (OSError, ValueError): return False
    return True


def wanted_mode(mode: str) -> str:
    "The mode asked for, before asking the server: 'auto' is online with an API key or WANDB_MODE=online."
    if mode != 'auto': return mode
    env = os.environ.get('WANDB_MODE', '').lower()  # the user's own `wandb offline`/WANDB_MODE wins over 'auto'
    if env in ('offline', 'dryrun', 'disabled'): return 'disabled' if env == 'disabled' else 'offline'
    return 'online' if env == 'online' or has_api_key() else 'offline'


def resolve_mode(mode: str) -> tuple[str, str | None]:
    """(mode to start in, why it is offline instead of online, or None): a run that wants to be online (see
    `wanted_mode`) goes offline when the server does not answer within PROBE_TIMEOUT, instead of waiting in
    wandb.init for ~100 s."""
    wanted = wanted_mode(mode)
    if wanted == 'online' and not server_answers(): return 'offline', f'did not answer within {PROBE_TIMEOUT:g} s'
    return wanted, None
