"""How secrets are named: the constants the CLI needs without loading the wire models
(pydantic), so that `alai run` starts fast."""

PATH_PATTERN = r"^[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)*$"  # ":" for Bitwarden's id:<uuid>
PATH_MAX = 300
VALUE_MAX_BYTES = 64 * 1024
REFERENCE_PREFIX = "secret://"
