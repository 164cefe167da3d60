"""A small English stopword list (written for this package; NLTK's list is not required).

Used by the attributes-rate analysis, which drops tokens whose stripped, lowercased form is a stopword or
has length <= 2.
"""

from __future__ import annotations

_WORDS = """
a about above after again against ago all almost along already also although always am among an and
another any anybody anyone anything anyway anywhere are aren't around as at away back be became because
become becomes been before being below beside besides between beyond both but by can can't cannot could
couldn't did didn't do does doesn't doing don't done down during each either else enough even ever every
everyone everything except few for from further get gets getting give given goes going gone got had hadn't
has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how how's
however i i'd i'll i'm i've if in instead into is isn't it it's its itself just least less let let's like
made make many may maybe me might mine more most mostly much must mustn't my myself near neither never
next no nobody none nor not nothing now of off often on once one only onto or other others otherwise ought
our ours ourselves out over own per perhaps please quite rather really said same say says shall shan't she
she'd she'll she's should shouldn't since so some somebody someone something sometimes somewhere still
such than that that's the their theirs them themselves then there there's these they they'd they'll
they're they've this those though through throughout thus to too toward towards under until up upon us
use used very via was wasn't we we'd we'll we're we've well were weren't what what's whatever when when's
whenever where where's whereas wherever whether which while who who's whoever whole whom whose why why's
will with within without won't would wouldn't yes yet you you'd you'll you're you've your yours yourself
yourselves
"""

#: lowercase English stopwords
STOPWORDS: frozenset[str] = frozenset(_WORDS.split())


def is_filtered(token: str, min_length: int = 3) -> bool:
    """True for tokens the attributes rate ignores: stripped + lowercased form is a stopword or shorter
    than ``min_length`` characters (the paper drops length <= 2)."""
    word = token.strip().lower()
    return len(word) < min_length or word in STOPWORDS
