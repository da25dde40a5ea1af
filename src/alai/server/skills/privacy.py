"""Private folders: path globs (ALAI_SKILLS_PRIVATE) that only `skills:private` may see.

Globs use git's wildmatch grammar (as in .gitignore) and are matched against the
whole path from the repository's root: `*` stays within one folder, `**` crosses
folders (`**/secrets.md` is that name at any depth). A path is private when it or
any folder above it matches, so `*/secrets/*` also hides `team/secrets/a/b.md`, and
`private/**` hides the folder `private` itself as well as what it holds. A folder
that holds nothing but private paths is hidden too (content.visible): `*/secrets/*`
hides the `secrets` folders, not only their files.
"""

from __future__ import annotations

import re

from dulwich.wildmatch import MalformedPattern, translate


class BadGlob(ValueError):
    pass


class PrivatePaths:
    def __init__(self, globs: list[str]) -> None:
        self.globs = tuple(globs)
        patterns = []
        for glob in globs:
            cleaned = glob.strip().strip("/")
            if not cleaned:
                continue
            try:
                patterns.append(re.compile(translate(cleaned.encode())))
                if cleaned.endswith("/**"):
                    patterns.append(re.compile(translate(cleaned[:-3].encode())))
            except (MalformedPattern, re.error) as error:
                raise BadGlob(f"ALAI_SKILLS_PRIVATE: {glob!r} is not a valid path glob ({error})") from None
        self._patterns = tuple(patterns)

    @classmethod
    def parse(cls, text: str) -> PrivatePaths:
        return cls([part.strip() for part in text.split(",") if part.strip()])

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def matches(self, path: str) -> bool:
        """Whether `path` (no leading slash) or a folder above it is private."""
        if not self._patterns or not path:
            return False
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end]).encode()
            if any(pattern.fullmatch(prefix) for pattern in self._patterns):
                return True
        return False


NOTHING_PRIVATE = PrivatePaths([])
