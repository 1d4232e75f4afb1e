"""Function names, qualifiers and ARNs: parsed and validated here, once, for every route.

Lambda lets a caller name a function as ``NAME``, ``NAME:QUALIFIER``, a partial ARN
(``ACCOUNT:function:NAME``) or a full ARN (``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``).
The platform keeps one version of each function (see ``publish_version`` in api.py), so a
qualifier is checked (``$LATEST``, a version number or an alias name) and otherwise names the
same function. Names go through :func:`servelab.config.validate_name`, the one rule for every
name that becomes a path, so ``../x`` never reaches the file system.
"""

from __future__ import annotations

import re

from servelab.config import validate_name
from servelab.errors import InvalidNameError

ACCOUNT = "000000000000"
REGION = "local"
# Lambda's qualifier: $LATEST, a version (digits) or an alias (letters, digits, - and _), <= 128.
_QUALIFIER_RE = re.compile(r"\$LATEST|[0-9]{1,10}|(?!^[0-9]+$)[A-Za-z0-9_-]{1,128}")
_ARN_RE = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[^:]*:[0-9]*:function:([^:]+)(?::([^:]+))?$")
_PARTIAL_RE = re.compile(r"^[0-9]{12}:function:([^:]+)(?::([^:]+))?$")


def function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return arn if qualifier is None else f"{arn}:{qualifier}"


def validate_qualifier(qualifier: str) -> str:
    if not _QUALIFIER_RE.fullmatch(qualifier):
        raise InvalidNameError(f"invalid qualifier {qualifier!r}: use $LATEST, a version number or an alias "
                               "name (letters, digits, '-', '_'; at most 128)")
    return qualifier


def parse_function_ref(ref: str, *, query_qualifier: str | None = None) -> tuple[str, str | None]:
    """``(name, qualifier)`` from any form Lambda accepts; raises :class:`InvalidNameError`.

    ``query_qualifier`` is the ``?Qualifier=`` of the request, which must agree with one in
    the name when both are given.
    """
    if not isinstance(ref, str) or not ref or len(ref) > 256:
        raise InvalidNameError(f"invalid function name {ref!r}: give a name, NAME:QUALIFIER or a function ARN")
    m = _ARN_RE.match(ref) or _PARTIAL_RE.match(ref)
    if m:
        name, qualifier = m.group(1), m.group(2)
    else:
        name, sep, qualifier_part = ref.partition(":")
        qualifier = qualifier_part if sep else None
    validate_name(name, what="function name")
    if qualifier is not None:
        validate_qualifier(qualifier)
    if query_qualifier is not None:
        validate_qualifier(query_qualifier)
        if qualifier is not None and qualifier != query_qualifier:
            raise InvalidNameError(f"the qualifier in the function name ({qualifier!r}) and the Qualifier "
                                   f"parameter ({query_qualifier!r}) differ")
        qualifier = query_qualifier
    return name, qualifier


def function_name_from_arn(ref: str) -> str:
    """The function a destination or tag ARN (or plain name) names."""
    return parse_function_ref(ref)[0]
