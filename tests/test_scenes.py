"""The procedural scenes (zoo.data.scenes): geometry consistent with itself, deterministic per scene,
distributed as the settings say, bad settings refused in one line."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.data.dense_augment import scale_crop_flip
from zoo.data.scene_sets import SceneDataset, SceneView
from zoo.data.scenes import (BOX, CEILING, CLASSES, CYLINDER, FLOOR, SPHERE, WALL, SceneSettings, backproject,
                             draw_scenes, object_types, render, render_scenes)

EXACT = SceneSettings(holes=False, noise=0.0)


@pytest.fixture(scope="module")
def batch():
    index = torch.arange(24)
    scenes = draw_scenes(EXACT, 0, "train", index)
    return scenes, render(scenes, 64, 64, EXACT)


def _world_points(scenes, out):
    """Every pixel's hit point in world coordinates [B, H, W, 3]: the depth back-projected, then moved
    by the camera's pose."""
    cam = backproject(out["depth"], scenes.fov).permute(0, 2, 3, 1)  # [B, H, W, 3]
    return torch.einsum("bij,bhwj->bhwi", scenes.rotation, cam) + scenes.eye[:, None, None]


def test_normals_match_finite_differences_of_depth_on_planes(batch):
    """On planar patches (a pixel and its right and lower neighbours on one face: same class, same rendered
    normal), the normal of the back-projected depth's finite differences is the rendered one: within 0.5
    degrees for at least 99% of them (float32 depth; the rest are where two parallel faces of one class
    meet), median under 0.05 degrees."""
    scenes, out = batch
    p = backproject(out["depth"], scenes.fov)  # [B, 3, H, W] camera frame
    dx = p[..., :-1, 1:] - p[..., :-1, :-1]
    dy = p[..., 1:, :-1] - p[..., :-1, :-1]
    fd = -F.normalize(torch.linalg.cross(dx, dy, dim=1), dim=1)  # facing the camera (z forward)
    n, m = out["normals"], out["mask"]
    here = n[..., :-1, :-1]
    planar = ((m[:, :-1, :-1] == m[:, :-1, 1:]) & (m[:, :-1, :-1] == m[:, 1:, :-1])
              & ((here - n[..., :-1, 1:]).abs().amax(1) < 1e-5) & ((here - n[..., 1:, :-1]).abs().amax(1) < 1e-5))
    angle = torch.rad2deg(torch.acos((fd * here).sum(1).clamp(-1, 1)))[planar]
    assert planar.float().mean() > 0.5  # most of a room is planes
    assert (angle < 0.5).float().mean() >= 0.99, angle.quantile(torch.tensor([0.5, 0.99]))
    assert angle.median() < 0.05
    # and the curved surfaces are curved: a sphere's neighbouring pixels differ in normal
    assert ((m[:, :-1, :-1] == SPHERE) & ~planar).any()


def test_normals_are_unit_and_face_the_camera(batch):
    scenes, out = batch
    n = out["normals"]
    assert torch.allclose(n.norm(dim=1), torch.ones(1), atol=1e-5)
    rays = backproject(torch.ones_like(out["depth"]), scenes.fov)
    assert ((n * rays).sum(1) < 0).all()  # every visible surface faces the ray that sees it


def test_classes_match_the_geometry_hit(batch):
    """Each pixel's back-projected point lies on a surface of its class: the floor at y = 0 (normal up in
    world coordinates), the ceiling at the room's height, walls at x = +-half width or z = +-half depth,
    objects on the surface of a present object of their type."""
    scenes, out = batch
    world = _world_points(scenes, out)
    mask = out["mask"]
    nw = torch.einsum("bij,bjhw->bhwi", scenes.rotation, out["normals"])  # camera -> world normals
    tol = 2e-4 * out["depth"][:, 0].clamp_min(1)  # float32 rounding grows with distance
    floor, ceiling, wall = mask == FLOOR, mask == CEILING, mask == WALL
    assert floor.any() and wall.any() and ceiling.any()
    assert (world[..., 1][floor].abs() < tol[floor]).all()
    assert (nw[floor] - torch.tensor([0.0, 1.0, 0.0])).abs().max() < 1e-5
    height = scenes.height[:, None, None].expand_as(mask)
    assert ((world[..., 1] - height)[ceiling].abs() < tol[ceiling]).all()
    hx, hz = scenes.half[:, 0, None, None].expand_as(mask), scenes.half[:, 1, None, None].expand_as(mask)
    off_wall = torch.minimum((world[..., 0].abs() - hx).abs(), (world[..., 2].abs() - hz).abs())
    assert (off_wall[wall] < tol[wall]).all()
    assert nw[wall][:, 1].abs().max() < 1e-6  # walls are vertical
    types = object_types(scenes.present.shape[1])
    for kind in (BOX, SPHERE, CYLINDER):
        px = mask == kind
        assert px.any(), CLASSES[kind]
        dist = torch.full(mask.shape, math.inf)
        for k in torch.nonzero(types == kind).flatten().tolist():
            c, e = scenes.centre[:, k, None, None], scenes.extent[:, k, None, None]
            rel = world - c
            if kind == BOX:  # into the box frame: max |coordinate| / half extent is 1 on its surface
                cs, sn = torch.cos(scenes.obj_yaw[:, k, None, None]), torch.sin(scenes.obj_yaw[:, k, None, None])
                local = torch.stack([cs * rel[..., 0] - sn * rel[..., 2], rel[..., 1],
                                     sn * rel[..., 0] + cs * rel[..., 2]], -1)
                d = ((local.abs() / e).amax(-1) - 1).abs() * e.amin(-1)
            elif kind == SPHERE:
                d = (rel.norm(dim=-1) - e[..., 0]).abs()
            else:  # the side (radius r, within the height) or the top disc
                radial = rel[..., [0, 2]].norm(dim=-1)
                side = torch.maximum((radial - e[..., 0]).abs(), (rel[..., 1].abs() - e[..., 1]).clamp_min(0))
                top = torch.maximum((rel[..., 1] - e[..., 1]).abs(), (radial - e[..., 0]).clamp_min(0))
                d = torch.minimum(side, top)
            d = torch.where(scenes.present[:, k, None, None], d, torch.full_like(d, math.inf))
            dist = torch.minimum(dist, d)
        assert (dist[px] < 3 * tol[px]).all(), (CLASSES[kind], dist[px].max())


def test_depth_holes_are_nan_and_only_where_the_sensor_rule_says():
    """With holes, some pixels' depth is NaN (never an image or normal pixel) and the rest equal the exact
    render; a hole is dark, far or grazing."""
    index = torch.arange(16)
    holes = render_scenes(SceneSettings(noise=0.0), 0, "train", index)
    exact = render_scenes(EXACT, 0, "train", index)
    nan = holes["depth"].isnan()
    assert 0.001 < nan.float().mean() < 0.2
    assert torch.equal(holes["depth"][~nan], exact["depth"][~nan])
    assert torch.isfinite(holes["image"]).all() and torch.isfinite(holes["normals"]).all()
    far = render_scenes(SceneSettings(noise=0.0, max_depth=2.0), 0, "train", index)
    assert (far["depth"][~far["depth"].isnan()] <= 2.0).all()
    assert (exact["depth"] > 2.0).any()


def test_a_scene_is_a_function_of_seed_split_and_index_alone():
    st = SceneSettings()
    a = render_scenes(st, 7, "train", torch.tensor([5, 9, 2]))
    b = render_scenes(st, 7, "train", torch.tensor([9]))
    again = render_scenes(st, 7, "train", torch.tensor([5, 9, 2]))
    for f in a:
        assert torch.equal(a[f].nan_to_num(-1.0), again[f].nan_to_num(-1.0))  # deterministic (holes NaN)
        assert torch.allclose(a[f][1:2], b[f], atol=1e-5, equal_nan=True), f  # whatever else is in the batch
    assert torch.equal(a["mask"][1:2], b["mask"])
    others = {"index": render_scenes(st, 7, "train", torch.tensor([10])),
              "split": render_scenes(st, 7, "val", torch.tensor([9])),
              "seed": render_scenes(st, 8, "train", torch.tensor([9]))}
    for why, o in others.items():
        assert (o["image"] - b["image"]).abs().mean() > 0.05, why
        assert not torch.equal(o["mask"], b["mask"]), why


def test_parameters_are_distributed_as_the_settings_say():
    st = SceneSettings(objects=(2, 5), fov=(40.0, 80.0), camera_height=(1.2, 1.6), pitch=(-30.0, -10.0), ceiling=0.25)
    n = 4000
    s = draw_scenes(st, 3, "test", torch.arange(n))
    counts = torch.bincount(s.objects, minlength=6)
    assert counts[:2].sum() == 0 and counts[2:].sum() == n
    assert ((counts[2:].float() - n / 4).abs() < 4 * math.sqrt(n / 4)).all(), counts  # uniform over 2..5
    for name, values, (lo, hi) in [("fov", s.fov, st.fov), ("height", s.eye[:, 1], st.camera_height),
                                   ("pitch", torch.rad2deg(s.pitch), st.pitch)]:
        assert lo <= values.min() and values.max() <= hi, name
        span = hi - lo
        assert values.min() < lo + 0.01 * span and values.max() > hi - 0.01 * span, name
        assert abs(values.mean() - (lo + hi) / 2) < 0.02 * span, name  # uniform: the middle on average
    assert abs(s.has_ceiling.float().mean() - 0.25) < 0.03
    # the camera stays clear of every object and inside the room; objects stay inside the walls
    footprint = torch.where(object_types(s.present.shape[1]) == BOX, s.extent[..., [0, 2]].norm(dim=-1),
                            s.extent[..., 0])
    gap = (s.centre[..., [0, 2]] - s.eye[:, None, [0, 2]]).norm(dim=-1) - footprint
    assert (gap[s.present] > 0.29).all()
    assert ((s.centre[..., [0, 2]].abs() + footprint[..., None]) <= s.half[:, None] + 1e-5).all()
    fixed = draw_scenes(SceneSettings(objects=(3, 3), fov=(60.0, 60.0)), 0, "train", torch.arange(50))
    assert (fixed.objects == 3).all() and torch.allclose(fixed.fov, torch.full((50,), 60.0))


@pytest.mark.parametrize("settings, words", [
    ({"objects": [0, 3]}, "objects must be between 1 and 64"),
    ({"objects": [4, 2]}, "low <= high"),
    ({"size": [16, 16]}, "outside 32..4096"),
    ({"size": [64]}, "size must be [height, width]"),
    ({"fov": [0, 60]}, "inside (0, 180)"),
    ({"fov": [60, 180]}, "inside (0, 180)"),
    ({"fov": [30, float("nan")]}, "finite"),
    ({"holes": "yes"}, "holes must be true or false"),
    ({"ceiling": 1.5}, "share of scenes"),
    ({"camera_height": [1.0, 3.0]}, "below room_height"),
])
def test_bad_settings_are_one_line_errors(settings, words):
    with pytest.raises(ValueError) as e:
        SceneSettings(**settings)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_augmentation_scales_depth_and_mirrors_normals():
    """LibMTL's scale-crop + flip on a hand-made batch: a crop at scale 1 and a mirror reverse columns and
    negate normal x; depth is divided by the scale."""
    h, w = 6, 8
    image = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(1, 3, h, w).clone()
    depth = torch.full((1, 1, h, w), 3.0)
    normals = F.normalize(torch.randn(1, 3, h, w), dim=1)
    mask = torch.arange(h * w).view(1, h, w) % 6
    batch = {"image": image, "depth": depth, "normals": normals, "mask": mask}
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        out = scale_crop_flip(batch, g)
        sc = float(3.0 / out["depth"][0, 0, 0, 0])
        assert any(abs(sc - s) < 1e-6 for s in (1.0, 1.2, 1.5))
        assert out["mask"].dtype == torch.int64 and set(out["mask"].unique().tolist()) <= set(range(6))
        if sc == 1.0:  # the whole image: identity or a mirror
            flipped = torch.allclose(out["image"], image.flip(-1), atol=1e-4)
            assert flipped or torch.allclose(out["image"], image, atol=1e-4)
            expect = normals.flip(-1) * torch.tensor([-1.0, 1, 1]).view(1, 3, 1, 1) if flipped else normals
            assert torch.allclose(out["normals"], expect, atol=1e-5)
            assert torch.equal(out["mask"], mask.flip(-1) if flipped else mask)
            seen.add(flipped)
        seen.add(round(sc, 1))
    assert {True, False, 1.0, 1.2, 1.5} <= seen


def test_dataset_items_are_the_batched_render_and_the_device_view_caches_it():
    ds = SceneDataset(EXACT, "val", 10, seed=0)
    one = ds[4]
    batch = render_scenes(EXACT, 0, "val", torch.tensor([4]))
    assert torch.equal(one["mask"], batch["mask"][0])
    view = ds.device_view(torch.device("cpu"))
    assert view.cache is not None
    got = view.batch(torch.tensor([4, 1]), None)
    assert torch.allclose(got["depth"][0], one["depth"]) and got["mask"].dtype == torch.int64
    small = SceneView(ds, torch.device("cpu"), None, max_bytes=1)
    assert small.cache is None  # too big for the cap: rendered per batch, the same scenes
    assert torch.equal(small.batch(torch.tensor([4]), None)["mask"], got["mask"][:1])
