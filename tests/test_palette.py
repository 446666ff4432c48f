"""The one palette: colour-blind-safe method colours, apart from the world's object colours, used
by the curves, ``show`` figures, the gallery and the report.  CIELAB and the colour-vision
deficiency simulation (Machado, Oliveira & Fernandes 2009, severity 1.0) are computed here, from
their published formulas and matrices."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

#: Machado et al. 2009, severity 1.0, on linear RGB
CVD = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _linear(rgb):
    c = np.asarray(rgb, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear):
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = (m @ np.clip(linear, 0, 1)) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _delta(a, b, vision="normal") -> float:
    return float(np.linalg.norm(_lab(CVD[vision] @ _linear(a)) - _lab(CVD[vision] @ _linear(b))))


def _rgb(hex_colour):
    h = hex_colour.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def test_lab_reference_values():
    """The CIELAB helper against textbook values (white, black, sRGB red)."""
    np.testing.assert_allclose(_lab(_linear((255, 255, 255))), [100, 0, 0], atol=0.1)
    np.testing.assert_allclose(_lab(_linear((0, 0, 0))), [0, 0, 0], atol=0.1)
    np.testing.assert_allclose(_lab(_linear((255, 0, 0))), [53.24, 80.09, 67.20], atol=0.3)


def test_method_colours_stay_apart_for_colour_blind_readers():
    from sepnms.evaluation.palette import METHOD_COLOURS

    colours = list(METHOD_COLOURS.values())
    assert len(set(colours)) == len(colours) >= 5
    for a, b in itertools.combinations(colours, 2):
        for vision in CVD:
            assert _delta(_rgb(a), _rgb(b), vision) >= 25, (a, b, vision)


def test_method_colours_apart_from_the_world_objects_and_background():
    """Normal vision: every method colour >= 25 CIELAB units from each named world colour and the
    grey background; under colour-vision deficiency colour alone cannot do that, which is why
    every box has a halo (checked in the gallery and figure tests)."""
    from sepnms.evaluation.palette import EXTRA_COLOURS, METHOD_COLOURS
    from sepnms.world.content import PALETTE

    for colour in list(METHOD_COLOURS.values()) + list(EXTRA_COLOURS):
        for name, rgb in PALETTE:
            assert _delta(_rgb(colour), rgb) >= 25, (colour, name)
        for grey in (100, 128, 160):
            assert _delta(_rgb(colour), (grey, grey, grey)) >= 25, (colour, grey)


def test_styles_of_variants_and_unknown_methods():
    from sepnms.evaluation.palette import EXTRA_COLOURS, METHOD_COLOURS, method_style

    assert method_style("sepnms").colour == METHOD_COLOURS["sepnms"] and method_style("sepnms").dash is None
    variant = method_style("sepnms@mattnet_dets")
    assert variant.colour == METHOD_COLOURS["sepnms"] and variant.dash  # same colour, dashed
    other = method_style("my_fusion")
    assert other.colour in EXTRA_COLOURS and other.dash and other == method_style("my_fusion")
    # an ablation row: the colour of the demo method with its rule, dashed by its labels
    assert method_style("ablation_clip_sep").colour == METHOD_COLOURS["sepnms"]
    assert method_style("ablation_clip_sep").dash != method_style("ablation_glove_sep").dash


@pytest.mark.parametrize("method", ["det", "sepnms", "ablation_clip_refnms", "my_fusion"])
def test_curves_use_the_palette(tmp_path, method):
    """A sweep plot draws each method's line in its palette colour and dash."""
    import matplotlib.colors as mcolors
    from matplotlib.figure import Figure

    from sepnms.evaluation import plots
    from sepnms.evaluation.palette import method_style

    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    curve = [{"proposals_per_expression": 1.0 + i, "hit_rate": 0.1 * i} for i in range(4)]
    plots._draw(ax, {method: curve}, "t", "hit_rate", None, None)
    line = ax.get_lines()[0]
    st = method_style(method)
    assert mcolors.to_hex(line.get_color()).lower() == st.colour.lower()
    assert (line.get_linestyle() == "-") == (st.dash is None)


def test_report_names_the_palette_colours():
    from sepnms.evaluation.palette import method_colour
    from sepnms.evaluation.report import colour_key

    key = colour_key(["det", "sepnms"])
    assert f"`det` {method_colour('det')}" in key and f"`sepnms` {method_colour('sepnms')}" in key


def test_every_method_of_the_demo_has_its_own_style():
    """The demo's five methods and six ablation rows are told apart in the curves and the
    gallery: no two share colour and dash."""
    from sepnms.engine.demo import ABLATION, DEMO_METHODS
    from sepnms.evaluation.palette import method_style

    styles = [method_style(m.name) for m in DEMO_METHODS + ABLATION]
    assert len(set(styles)) == len(styles) == 11
    variants = [method_style(f"{m.name}@mattnet_dets") for m in DEMO_METHODS]
    assert len(set(variants + styles)) == 16
