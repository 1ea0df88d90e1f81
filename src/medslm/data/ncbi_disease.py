"""NCBI-disease (Doğan et al. 2014): disease mentions in PubMed abstracts, IOB (one type: Disease).

The MTL-Bioinformatics-2016 release: ``train.tsv``, ``devel.tsv`` (and ``test.tsv``, kept aside in
the mirror), read by :mod:`medslm.data.iob`."""

from medslm.data import iob

SPEC = iob.spec("ncbi_disease", "NCBI-disease-IOB", "NCBI-disease: disease mention recognition (IOB)",
                "train 5,424 + devel 923 sentences")
