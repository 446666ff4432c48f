"""Interoperability with the authors' released artefacts.

:mod:`release_weights` maps the state dicts the Ref-NMS and Sep-NMS authors publish
(``att_vanilla_*_b.pth``, ``my_sipsepqk_ad_att_vanilla_*_b.pth``) onto this project's
:class:`~sepnms.models.sepnms_model.SepNMSModel` and back; :mod:`mattnet_release` reads MAttNet's
released checkpoints (legacy PyTorch 0.2-0.4 files of the whole module) without running them: the
container in :mod:`legacy_torch`, its pickle through the restricted unpickler of :mod:`mattnet_unpickler`.
"""
from sepnms.interop.mattnet_release import MAttNetRelease, load_mattnet_release
from sepnms.interop.release_weights import (
    RELEASE_FORMATS,
    ImportReport,
    export_release_weights,
    import_release_weights,
    release_key_map,
    release_model_type,
)

__all__ = ["MAttNetRelease", "load_mattnet_release", "RELEASE_FORMATS", "ImportReport", "export_release_weights", "import_release_weights", "release_key_map",
           "release_model_type"]
