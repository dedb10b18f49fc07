"""Downloads are verified: https or a pin from outside the file, every redirect hop checked, archives bounded,
manifests confined to their directory, unpinned keras.applications weights recorded on first use (SECURITY.md).

Network tests use servers on 127.0.0.1 only; the https ones trust a self-signed certificate made with the
openssl CLI through SSL_CERT_FILE.
"""

import json
import shutil

import pytest

from kerastl.errors import KerastlError


# ------------------------------------------------------------------------------------------------------------
# Manifests name files inside their directory only


def _manifest(folder, backbone, weights_file):
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "t", "modality": "image", "input": {"shape": [16, 16, 3]},
                "preprocessing": {"mode": "scale", "scale": 1 / 255}, "feature_width": 16,
                "weights": {"file": weights_file}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("name", ["../outside.keras", "sub/../../outside.keras", "/abs/outside.keras",
                                  "link.keras", "~/outside.keras"])
def test_manifest_weights_file_must_stay_inside_its_directory(tmp_path, tiny_backbone_path, name):
    from kerastl.backbones import load_backbone

    # A real model file outside the backbone's directory, where each name would lead.
    outside = tmp_path / "release" / "outside.keras"
    folder = _manifest(tmp_path / "release" / "tiny", tiny_backbone_path,
                       str(outside) if name.startswith("/abs") else name)
    shutil.copy(tiny_backbone_path, outside)
    (folder / "sub").mkdir()
    (folder / "link.keras").symlink_to(outside)
    with pytest.raises(KerastlError, match="outside its directory") as error:
        load_backbone(str(folder))
    assert "\n" not in str(error.value)


def test_manifest_weights_file_inside_its_directory_loads(tmp_path, tiny_backbone_path):
    from kerastl.backbones import load_backbone

    folder = _manifest(tmp_path / "tiny", tiny_backbone_path, "weights/backbone.keras")
    (folder / "weights").mkdir()
    shutil.copy(tiny_backbone_path, folder / "weights" / "backbone.keras")
    assert load_backbone(str(folder)).feature_width == 16
