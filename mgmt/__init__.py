"""mgmt: the agent, its front-ends and its commands (`mgmt.__main__`)."""

import sys

_SITE: list[bool] = []  # [True] once `full_site` ran `site`


def full_site() -> None:
    """The installed packages' paths, if the interpreter started without `site` (-S):
    `scripts/install.sh`'s `mgmt` launcher does, for the thin `mgmt deploy` (`mgmt.__main__`),
    which needs the standard library and this package only."""
    if sys.flags.no_site and not _SITE:
        _SITE.append(True)
        import site

        site.main()
