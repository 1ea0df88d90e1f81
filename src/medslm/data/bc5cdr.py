"""BC5CDR (Li et al. 2016): chemical and disease mentions in PubMed abstracts, IOB (Chemical, Disease).

The MTL-Bioinformatics-2016 release: ``train.tsv``, ``devel.tsv`` (and ``test.tsv``, kept aside in
the mirror), read by :mod:`medslm.data.iob`."""

from medslm.data import iob

SPEC = iob.spec("bc5cdr", "BC5CDR-IOB", "BC5CDR: chemical and disease mention recognition (IOB)",
                "train 4,560 + devel 4,581 sentences")
