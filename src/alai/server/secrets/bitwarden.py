"""Bitwarden backends: Secrets Manager through the `bws` CLI, the password manager through `bw`.

Both run their CLI as a subprocess (never through a shell) with a minimal environment
(PATH, HOME, locale, proxy and CA settings: not the server's own secrets), hand it
credentials in that environment (never on its command line), and kill it after
`timeout_seconds` (BackendDown). Error messages hold the CLI's reason, scrubbed of any
credential or value the call knew about; nothing logged holds either.

BwsBackend (`kind: bws`, a machine account's access token):
  - A path is the secret whose `key` equals it. Keys resolve through a cached key→id
    listing (`bws secret list [PROJECT]`; the values it carries are dropped at once),
    refreshed every `refresh_seconds` and on a miss (at most once per
    `miss_refresh_seconds`); the value is then fetched by id (`bws secret get`), so it is
    never older than the call. Two secrets with one key → Ambiguous, naming their ids.
  - Writes need `project_id` (`bws secret create` / `edit --value`); without it the mount
    is read-only. bws takes a value only as an argument: while a write runs, the value is
    in that process's command line, which every local user can read (/proc/PID/cmdline)
    unless /proc is mounted with hidepid=2; run the control plane where no one else logs in.
BwBackend (`kind: bw`, a user's vault: API-key login and the master password):
  - One session: `bw status`; `bw login --apikey` if unauthenticated; `bw unlock
    --passwordenv BW_PASSWORD --raw`. The session key stays in memory and goes to each
    command as BW_SESSION. Locked or logged out mid-way → log in / unlock again once,
    else BackendDown with bw's reason.
  - Items come from one cached `bw sync` + `bw list items`, refreshed every
    `refresh_seconds` and when a name is missing (at most once per
    `miss_refresh_seconds`): a lookup starts no process. A failed sync is BackendDown
    (the service then serves its cache, marked stale), not a silent offline answer.
  - `ITEM` → the item's password (a secure note: its notes); `ITEM/FIELD` → username,
    password, notes, totp (the stored seed, not a code: codes expire before a cache does)
    or a custom field. Names match exactly (bw's own `get` matches substrings); an item
    name shared by several items → Ambiguous with their ids, never a guess.
  - put sets the password (or field) of the item, or creates a login item named after
    the path; the item goes to bw as encoded JSON on stdin, never on a command line.
    delete moves the item to the trash.
Both: `id:<uuid>` (then `/FIELD` for bw) addresses a secret or item by id; `list` names
secrets by key or item name, and by `id:<uuid>` where the name is shared or not a path.
"""


from alai.server.secrets.bw import BwBackend
from alai.server.secrets.bws import BwsBackend

__all__ = ["BwBackend", "BwsBackend"]
