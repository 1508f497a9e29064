"""Procedural indoor-like scenes, ray cast in batches on the training device.

Each scene is a room (floor, four walls, a ceiling in some scenes) holding a few boxes (at a random
yaw), spheres and upright cylinders resting on the floor, seen by a pinhole camera at a random
position, height, yaw, pitch and field of view, lit by one point light. Every pixel's ray is
intersected with the analytic surfaces, so the four outputs come from the same hit:

- ``image`` ``[B, 3, H, W]`` in [0, 1]: Lambertian shading from the light (with cast shadows of
  the objects), ambient light, a 3-D checker texture per surface, an exposure, gamma 1/2.2 and
  Gaussian sensor noise;
- ``mask`` ``[B, H, W]`` int64: the class of the surface hit, :data:`CLASSES` (every ray hits the
  closed room, so no pixel is unlabelled);
- ``depth`` ``[B, 1, H, W]`` float32 metres: the z-depth (along the optical axis, as a depth
  camera's), NaN where the simulated sensor returns nothing (``holes``: dark, far or grazing
  surfaces);
- ``normals`` ``[B, 3, H, W]``: the surface's own unit normal (never estimated from depth), in camera
  coordinates: x right, y down, z forward (OpenCV's convention), facing the camera.

Intrinsics: square pixels, focal length ``f = (W / 2) / tan(fov / 2)`` (``fov`` horizontal), principal
point at the image centre; pixel ``(row i, column j)`` looks along ``((j + 0.5 - W/2) / f,
(i + 0.5 - H/2) / f, 1)`` (:func:`intrinsics`, :func:`backproject`).

Scene ``i`` of a split is a pure function of ``(seed, split, i)``: every random number is a
counter-based hash (murmur3's finaliser) of those three and the number's own slot, computed for a
whole batch at once. No generator state is carried from scene to scene, so a scene is the same in
any batch, on any device (up to float rounding), with no per-scene host work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

#: the semantic classes, in label order
CLASSES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = range(len(CLASSES))
#: the object type of slot k is OBJECT_TYPES[k % 3]; a scene's objects are a random subset of the slots
OBJECT_TYPES = (BOX, SPHERE, CYLINDER)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: the smallest image side: the deepest features of a stride-32 encoder (the ResNets) are then 1x1
MIN_SIZE = 32
#: the camera stands at least this far from every wall, so objects pushed off it stay in the room
CAMERA_MARGIN = 1.0
#: room surfaces (floor, ceiling, walls +x, -x, +z, -z) come before the object slots in material tables
ROOM_SURFACES = 6
#: sensor-like holes: darker than this (linear intensity), farther than ``max_depth``, or seen at a
#: grazing angle (|cos| between the ray and the normal below this, i.e. beyond about 83 degrees)
DARK, GRAZING = 0.06, 0.12
_EPS = 1e-4
_M32 = 0xFFFFFFFF


def _pair(name: str, value, kind=float) -> tuple:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"scenes setting {name} must be a pair [low, high], got {value!r}")
    lo, hi = kind(value[0]), kind(value[1])
    if kind is int and (lo != value[0] or hi != value[1]):
        raise ValueError(f"scenes setting {name} must be a pair of integers [low, high], got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"scenes setting {name} must be finite with low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are drawn. Pairs are ``[low, high]`` of a uniform draw (integers for ``objects``)."""

    size: tuple[int, int] = (64, 64)  # image (height, width); NYUv2's preprocessed size is 288x384
    objects: tuple[int, int] = (3, 8)  # objects per scene
    fov: tuple[float, float] = (55.0, 70.0)  # horizontal field of view, degrees
    camera_height: tuple[float, float] = (1.0, 1.8)  # metres above the floor
    pitch: tuple[float, float] = (-35.0, -5.0)  # degrees, negative looks down
    room: tuple[float, float] = (4.0, 8.0)  # room width and depth (each drawn), metres
    room_height: tuple[float, float] = (2.4, 3.2)  # the ceiling's height, or the light's reference without one
    ceiling: float = 0.7  # share of scenes with a ceiling
    holes: bool = True  # sensor-like invalid depth (NaN): dark, far and grazing surfaces
    max_depth: float = 10.0  # metres; farther is a hole (with ``holes``)
    noise: float = 0.02  # sensor noise, standard deviation in image units
    shadows: bool = True

    def __post_init__(self) -> None:
        size = self.size
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise ValueError(f"scenes setting size must be [height, width] in pixels, got {size!r}")
        if min(size) < MIN_SIZE or max(size) > 4096:
            raise ValueError(f"scenes setting size {list(size)} is outside {MIN_SIZE}..4096 pixels a side: smaller "
                             f"leaves a stride-32 encoder (the ResNets) under one feature pixel")
        object.__setattr__(self, "size", tuple(size))
        lo, hi = _pair("objects", self.objects, int)
        if lo < 1 or hi > 64:
            raise ValueError(f"scenes setting objects must be between 1 and 64 per scene, got {list(self.objects)}")
        object.__setattr__(self, "objects", (lo, hi))
        fov = _pair("fov", self.fov)
        if not (0.0 < fov[0] and fov[1] < 180.0):
            raise ValueError(f"scenes setting fov must lie inside (0, 180) degrees, got {list(self.fov)}")
        object.__setattr__(self, "fov", fov)
        checks = {"camera_height": (0.1, None), "pitch": (-89.0, 89.0), "room": (2 * CAMERA_MARGIN + 2.0, 100.0),
                  "room_height": (0.5, 100.0)}
        for name, (low, high) in checks.items():
            v = _pair(name, getattr(self, name))
            if v[0] < low or (high is not None and v[1] > high):
                raise ValueError(f"scenes setting {name} must lie in [{low}, {high if high is not None else 'inf'}], "
                                 f"got {list(getattr(self, name))}")
            object.__setattr__(self, name, v)
        if self.camera_height[1] >= self.room_height[0]:
            raise ValueError(f"scenes setting camera_height {list(self.camera_height)} must stay below room_height "
                             f"{list(self.room_height)}")
        for name in ("ceiling", "max_depth", "noise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"scenes setting {name} must be a finite number >= 0, got {v!r}")
        if self.ceiling > 1:
            raise ValueError(f"scenes setting ceiling is a share of scenes, in [0, 1], got {self.ceiling!r}")
        for name in ("holes", "shadows"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"scenes setting {name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def slots(self) -> int:
        """Object slots every scene is computed over (the absent ones never hit)."""
        return self.objects[1]


# ---------------------------------------------------------------- counter-based random numbers
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for x in [0, 2**32), in int64 without overflow (the constant split in halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser: a bijection of [0, 2**32) with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def scene_keys(seed: int, split: str, index: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per scene ``[B]`` (int64), from (seed, split, index) alone."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_IDS)}, got {split!r}")
    index = index.long()
    lo, hi = (int(seed) & _M32), ((int(seed) >> 32) & _M32)
    h = _fmix(torch.full_like(index, lo) ^ 0x5CE4E5)
    h = _fmix(h ^ hi)
    h = _fmix(h ^ SPLIT_IDS[split])
    return _fmix(h ^ (index & _M32))


def _uniform(keys: torch.Tensor, counter: torch.Tensor | int) -> torch.Tensor:
    """A uniform float32 in [0, 1) per key and counter (24 bits: exact in float32)."""
    return (_fmix(_fmix(keys ^ 0x2545F491) ^ counter) >> 8).float() * (1.0 / (1 << 24))


class _Draws:
    """Uniform draws of one batch of scenes, slot after slot (slot k is the k-th number of every scene)."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys, self.k = keys, 0

    def u(self, *shape: int) -> torch.Tensor:
        n = math.prod(shape)
        counters = torch.arange(self.k, self.k + n, device=self.keys.device)
        self.k += n
        return _uniform(self.keys[:, None], counters[None]).view(len(self.keys), *shape)

    def range(self, lo_hi: tuple[float, float], *shape: int) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * self.u(*shape)


# ---------------------------------------------------------------- scene parameters
@dataclass
class Scenes:
    """A batch of scenes' parameters (world coordinates: y up, the floor at y = 0, metres)."""

    keys: torch.Tensor  # [B] the scenes' hash keys (sensor noise is drawn from them)
    half: torch.Tensor  # [B, 2] room half width (x) and half depth (z)
    height: torch.Tensor  # [B] ceiling height
    has_ceiling: torch.Tensor  # [B] bool
    eye: torch.Tensor  # [B, 3] camera position
    yaw: torch.Tensor  # [B] radians
    pitch: torch.Tensor  # [B] radians
    fov: torch.Tensor  # [B] horizontal field of view, degrees
    rotation: torch.Tensor  # [B, 3, 3] camera to world: columns right, down, forward
    light: torch.Tensor  # [B, 3] point light position
    light_power: torch.Tensor  # [B]
    ambient: torch.Tensor  # [B]
    exposure: torch.Tensor  # [B]
    present: torch.Tensor  # [B, S] bool: the slot holds an object
    centre: torch.Tensor  # [B, S, 3] object centre (boxes, cylinders: the middle of their height)
    extent: torch.Tensor  # [B, S, 3] box half extents; sphere (r, r, r); cylinder (r, half height, r)
    obj_yaw: torch.Tensor  # [B, S] boxes' yaw (radians)
    albedo: torch.Tensor  # [B, 6 + S, 3] per surface: room surfaces, then object slots
    checker: torch.Tensor  # [B, 6 + S] checker cells per metre
    contrast: torch.Tensor  # [B, 6 + S] checker contrast (0: plain)

    @property
    def objects(self) -> torch.Tensor:
        """Objects per scene ``[B]``."""
        return self.present.sum(1)


def object_types(slots: int) -> torch.Tensor:
    """The class of each object slot ``[S]``."""
    return torch.tensor([OBJECT_TYPES[k % len(OBJECT_TYPES)] for k in range(slots)])


def draw_scenes(settings: SceneSettings, seed: int, split: str, index: torch.Tensor) -> Scenes:
    """The parameters of scenes ``index`` (a 1-D tensor, on the device to render on) of ``split``."""
    st, dev = settings, index.device
    keys = scene_keys(seed, split, index)
    d = _Draws(keys)
    b, s = len(index), st.slots
    half = d.range(st.room, 2) / 2
    height = d.range(st.room_height)
    has_ceiling = d.u() < st.ceiling
    eye_xz = (d.u(2) * 2 - 1) * (half - CAMERA_MARGIN)
    eye = torch.stack([eye_xz[:, 0], d.range(st.camera_height), eye_xz[:, 1]], 1)
    yaw = d.u() * (2 * math.pi)
    pitch = torch.deg2rad(d.range(st.pitch))
    fov = d.range(st.fov)
    light_xz = (d.u(2) * 2 - 1) * half * 0.8
    light = torch.stack([light_xz[:, 0], height - 0.15, light_xz[:, 1]], 1)
    light_power, ambient, exposure = d.range((0.8, 1.4)), d.range((0.12, 0.3)), d.range((0.85, 1.15))
    # objects: a uniform count, placed in a random subset of the typed slots
    count = st.objects[0] + (d.u() * (st.objects[1] - st.objects[0] + 1)).long().clamp_max(st.objects[1] - st.objects[0])
    rank = d.u(s).argsort(1).argsort(1)
    present = rank < count[:, None]
    types = object_types(s).to(dev)
    box, sphere = types == BOX, types == SPHERE
    box_half = d.range((0.15, 0.55), s, 2)
    box_h = d.range((0.3, 1.2), s)
    radius = torch.where(sphere, d.range((0.15, 0.5), s), d.range((0.1, 0.4), s))
    cyl_h = d.range((0.3, 1.3), s)
    ext_x = torch.where(box, box_half[..., 0], radius)
    ext_z = torch.where(box, box_half[..., 1], radius)
    ext_y = torch.where(box, box_h / 2, torch.where(sphere, radius, cyl_h / 2))
    extent = torch.stack([ext_x, ext_y, ext_z], -1)
    footprint = torch.where(box, box_half.norm(dim=-1), radius)  # radius of the object's floor circle
    # objects stand mostly in front of the camera (within its horizontal field of view plus 10 degrees
    # either side, 0.6-5 m away), moved inside the walls where that is outside the room
    bearing = yaw[:, None] + (d.u(s) * 2 - 1) * torch.deg2rad(fov[:, None] / 2 + 10)
    dist = footprint + d.range((0.6, 5.0), s)
    xz = eye_xz[:, None] + dist[..., None] * torch.stack([torch.sin(bearing), torch.cos(bearing)], -1)
    room = half[:, None] - footprint[..., None]
    xz = torch.maximum(torch.minimum(xz, room), -room)
    # an object within reach of the camera is moved towards the room's centre, just out of reach:
    # the camera never stands inside (or touching) an object
    clear = footprint + 0.3
    away = xz - eye_xz[:, None]
    near = away.norm(dim=-1) < clear
    to_centre = -eye_xz / eye_xz.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    to_centre = torch.where(eye_xz.norm(dim=-1, keepdim=True) < 1e-6, torch.tensor([1.0, 0.0], device=dev), to_centre)
    xz = torch.where(near[..., None], eye_xz[:, None] + to_centre[:, None] * clear[..., None], xz)
    centre = torch.stack([xz[..., 0], ext_y, xz[..., 1]], -1)
    obj_yaw = d.u(s) * (2 * math.pi)
    n = ROOM_SURFACES + s
    albedo = d.range((0.15, 0.95), n, 3)
    checker = d.range((1.0, 6.0), n)
    contrast = torch.where(d.u(n) < 0.5, torch.zeros(b, n, device=dev), d.range((0.15, 0.6), n))
    return Scenes(keys, half, height, has_ceiling, eye, yaw, pitch, fov, camera_rotation(yaw, pitch), light,
                  light_power, ambient, exposure, present, centre, extent, obj_yaw, albedo, checker, contrast)


def camera_rotation(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotations ``[B, 3, 3]``: columns right, down, forward (a right-handed camera
    frame, x right, y down, z forward, in a y-up world), no roll."""
    cp, sp, cy, sy = torch.cos(pitch), torch.sin(pitch), torch.cos(yaw), torch.sin(yaw)
    forward = torch.stack([sy * cp, sp, cy * cp], -1)
    right = torch.stack([-cy, torch.zeros_like(cy), sy], -1)
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward], -1)


def intrinsics(fov: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Focal length in pixels ``[B]`` of a horizontal field of view in degrees."""
    return (w / 2) / torch.tan(torch.deg2rad(fov) / 2)


def rays(fov: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Camera-frame ray directions ``[B, H, W, 3]`` with z = 1 (so a hit's ray parameter is its z-depth)."""
    f = intrinsics(fov, h, w).view(-1, 1, 1)
    dev = fov.device
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5 - h / 2).view(1, h, 1) / f
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5 - w / 2).view(1, 1, w) / f
    return torch.stack(torch.broadcast_tensors(u, v, torch.ones_like(u)), -1)


def backproject(depth: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    """Camera-frame points ``[B, 3, H, W]`` of z-depths ``[B, 1, H, W]`` (the inverse of rendering's projection)."""
    h, w = depth.shape[-2:]
    return rays(fov, h, w).permute(0, 3, 1, 2) * depth


# ---------------------------------------------------------------- ray casting
def _safe(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zeros moved to +-1e-12, so a division by it is finite."""
    return torch.where(x.abs() < 1e-12, torch.full_like(x, 1e-12) * torch.where(x < 0, -1.0, 1.0), x)


def _room(o: list[torch.Tensor], d: list[torch.Tensor], sc: Scenes):
    """The room surface each ray leaves through: ``t``, surface index, class, world normal (ox, oy, oz
    broadcast against ray components ``[B, P]``). The camera is inside the convex room, so along each
    axis the direction's sign picks the one plane it can reach."""
    hx, hz = sc.half[:, 0:1], sc.half[:, 1:2]
    dx, dy, dz = (_safe(c) for c in d)
    tx = (torch.where(dx > 0, hx, -hx) - o[0]) / dx
    tz = (torch.where(dz > 0, hz, -hz) - o[2]) / dz
    up = dy > 0
    ty = torch.where(up, (sc.height[:, None] - o[1]) / dy, -o[1] / dy)
    ty = ty.masked_fill(up & ~sc.has_ceiling[:, None], math.inf)
    t = torch.minimum(torch.minimum(tx, tz), ty)
    on_y, on_x = ty <= t, (tx <= t) & ~(ty <= t)
    surface = torch.where(on_y, torch.where(up, 1, 0), torch.where(on_x, torch.where(dx > 0, 2, 3),
                                                                    torch.where(dz > 0, 4, 5)))
    cls = torch.where(on_y, torch.where(up, CEILING, FLOOR), torch.full_like(surface, WALL))
    zero = torch.zeros_like(t)
    nx = torch.where(on_x, -torch.sign(dx), zero)
    ny = torch.where(on_y, torch.where(up, -1.0, 1.0), zero)
    nz = torch.where(~on_x & ~on_y, -torch.sign(dz), zero)
    return t, surface, cls, (nx, ny, nz)


def _box(o, d, c, e, cs, sn, normals: bool):
    """Ray / yawed box (``cs``, ``sn``: its yaw's cosine and sine): ``t`` (inf on a miss) and the world
    normal of the face hit."""
    rx, ry, rz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    lo = (cs * rx - sn * rz, ry, sn * rx + cs * rz)  # world -> box frame (a rotation about y)
    ld = (cs * d[0] - sn * d[2], d[1], sn * d[0] + cs * d[2])
    near, far = [], []
    for a in range(3):
        # a zero direction component gives inf (the slab is never left or always missed, as it should be);
        # only a ray lying exactly in a face's plane gives NaN, and a NaN is a miss below
        inv = torch.reciprocal(ld[a])
        t1, t2 = (-e[a] - lo[a]) * inv, (e[a] - lo[a]) * inv
        near.append(torch.minimum(t1, t2))
        far.append(torch.maximum(t1, t2))
    t_near = torch.maximum(torch.maximum(near[0], near[1]), near[2])
    t_far = torch.minimum(torch.minimum(far[0], far[1]), far[2])
    t = t_near.masked_fill(~((t_near <= t_far) & (t_near > _EPS)), math.inf)
    if not normals:
        return t, None
    ax = near[0] >= t_near
    ay = ~ax & (near[1] >= t_near)
    az = ~ax & ~ay
    zero = torch.zeros_like(t)
    lnx = torch.where(ax, -torch.sign(ld[0]), zero)
    lny = torch.where(ay, -torch.sign(ld[1]), zero)
    lnz = torch.where(az, -torch.sign(ld[2]), zero)
    return t, (cs * lnx + sn * lnz, lny, -sn * lnx + cs * lnz)  # box frame -> world


def _sphere(o, d, c, e, normals: bool):
    r = e[0]
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    a = d[0] ** 2 + d[1] ** 2 + d[2] ** 2
    b = ox * d[0] + oy * d[1] + oz * d[2]
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - r * r)
    t = (-b - disc.clamp_min(0).sqrt()) / a
    t = t.masked_fill(~((disc >= 0) & (t > _EPS)), math.inf)
    if not normals:
        return t, None
    return t, tuple((oc + t * dc) / r for oc, dc in zip((ox, oy, oz), d))


def _cylinder(o, d, c, e, normals: bool):
    """Ray / upright capped cylinder (its bottom rests on the floor: only the side and the top are seen)."""
    r, hh = e[0], e[1]
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    a = (d[0] ** 2 + d[2] ** 2).clamp_min(1e-12)
    b = ox * d[0] + oz * d[2]
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    ts = (-b - disc.clamp_min(0).sqrt()) / a
    ys = oy + ts * d[1]
    side = (disc >= 0) & (ts > _EPS) & (ys.abs() <= hh)
    tc = (hh - oy) / d[1]  # (+-inf for a level ray: never a cap hit, which needs d[1] < 0)
    px, pz = ox + tc * d[0], oz + tc * d[2]
    cap = (d[1] < 0) & (tc > _EPS) & (px * px + pz * pz <= r * r)
    t = torch.minimum(ts.masked_fill(~side, math.inf), tc.masked_fill(~cap, math.inf))
    if not normals:
        return t, None
    on_cap = cap & (tc <= t)
    zero = torch.zeros_like(t)
    nx = torch.where(on_cap, zero, (ox + t * d[0]) / r)
    nz = torch.where(on_cap, zero, (oz + t * d[2]) / r)
    return t, (nx, torch.where(on_cap, torch.ones_like(t), zero), nz)


#: the cull's bounding spheres are this much larger than the objects' (metres): far above float rounding
#: (so a culled ray certainly misses), and above the shadow rays' 1e-3 offset from their surface
_CULL_MARGIN = 0.01


def _cull(sc: Scenes, apex: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """``[B, P, S]`` bool: whether the ray from ``apex`` ``[B, 3]`` along ``dirs`` ``[B, P, 3]`` may meet
    object slot k (False only for absent slots and certain misses of the slot's bounding sphere).

    Objects cover a small part of the image, so testing every ray against every object exactly is
    most of the work; this test is one matrix product and a few comparisons, and the exact one then
    runs on the candidates only (:func:`_object_hits`)."""
    w = sc.centre - apex[:, None]  # [B, S, 3] apex -> object centre
    r = sc.extent.norm(dim=-1) + _CULL_MARGIN  # bounding radius (boxes' corners, cylinders' rims)
    k = ((w * w).sum(-1) - r * r)[:, None]  # [B, 1, S]; < 0: the apex is inside the sphere
    dw = dirs @ w.transpose(1, 2)  # [B, P, S]
    dd = (dirs * dirs).sum(-1, keepdim=True)  # [B, P, 1]
    # the line passes within r of the centre ((d.w)^2 >= |d|^2 (|w|^2 - r^2)), ahead of the apex
    return (((dw > 0) & (dw * dw >= dd * k)) | (k < 0)) & sc.present[:, None]


def _object_hits(sc: Scenes, o, d, cand: torch.Tensor, normals: bool):
    """Slot by slot, the exact hits of the candidate rays (``cand`` from :func:`_cull`): yields ``(slot,
    idx, t, normal)``, ``idx`` the rays' flat indices into ``[B * P]``, the others their values (``t``
    inf on a miss). ``o`` and ``d`` are ray components, ``[B, 1]`` (one per scene) or ``[B, P]``.

    Per-scene quantities (the object's parameters, its yaw's cosine and sine) are computed per scene as
    before and only then gathered, and the rest is elementwise arithmetic, so every candidate's result is
    bit for bit what testing all the rays would give."""
    b, p, s = cand.shape
    # flattened once (a strided component's reshape is a copy): per scene [B] or per ray [B * P]
    o, d = ([x[:, 0] if x.shape[1] == 1 else x.reshape(-1) for x in v] for v in (o, d))
    for k, kind in enumerate(object_types(s).tolist()):
        idx = cand[..., k].reshape(-1).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        scene = idx // p
        ok, dk = ([x[scene] if len(x) == b else x[idx] for x in v] for v in (o, d))
        c = [sc.centre[:, k, i][scene] for i in range(3)]
        e = [sc.extent[:, k, i][scene] for i in range(3)]
        if kind == BOX:
            yaw = sc.obj_yaw[:, k:k + 1]
            t, n = _box(ok, dk, c, e, torch.cos(yaw)[scene, 0], torch.sin(yaw)[scene, 0], normals)
        elif kind == SPHERE:
            t, n = _sphere(ok, dk, c, e, normals)
        else:
            t, n = _cylinder(ok, dk, c, e, normals)
        yield k, idx, t, n


def render(sc: Scenes, h: int, w: int, settings: SceneSettings) -> dict[str, torch.Tensor]:
    """Ray cast a batch of scenes at ``h`` x ``w``: ``image``, ``mask``, ``depth``, ``normals`` (module docstring)."""
    b = len(sc.keys)
    dc = rays(sc.fov, h, w).view(b, h * w, 3)
    dw = dc @ sc.rotation.transpose(1, 2)  # world directions [B, P, 3]
    d = [dw[..., i] for i in range(3)]
    o = [sc.eye[:, i:i + 1] for i in range(3)]
    t, surface, cls, n = _room(o, d, sc)
    n = list(n)
    types = object_types(sc.present.shape[1]).tolist()
    flat = [x.view(-1) for x in (t, surface, cls, *n)]  # views: the writes below land in t, surface, ...
    for k, idx, tk, nk in _object_hits(sc, o, d, _cull(sc, sc.eye, dw), normals=True):
        closer = tk < flat[0][idx]  # strict: of equal hits the lower slot wins
        sel = idx[closer]
        flat[0][sel] = tk[closer]
        flat[1][sel] = ROOM_SURFACES + k
        flat[2][sel] = types[k]
        for nf, nc in zip(flat[3:], nk):
            nf[sel] = nc[closer]
    p = [oc + t * dc_ for oc, dc_ in zip(o, d)]
    # texture: a 3-D checker evaluated just inside the surface (points on a plane sit exactly on a cell
    # boundary, and rounding would speckle them)
    freq = sc.checker.gather(1, surface)
    cells = sum(torch.floor((pc - 1e-3 * nc) * freq) for pc, nc in zip(p, n))
    tex = 1.0 - sc.contrast.gather(1, surface) * torch.remainder(cells, 2.0)
    albedo = sc.albedo.gather(1, surface[..., None].expand(-1, -1, 3))
    # light: Lambert with the inverse-square falloff softened near the lamp, and the objects' shadows
    lv = [sc.light[:, i:i + 1] - pc for i, pc in enumerate(p)]
    dist2 = sum(c * c for c in lv)
    lambert = (sum(nc * lc for nc, lc in zip(n, lv)) / dist2.sqrt()).clamp_min(0)
    if settings.shadows:
        so = [pc + 1e-3 * nc for pc, nc in zip(p, n)]
        lit = torch.ones_like(t, dtype=torch.bool)
        # shadow rays all end at the light, so one cull from it; an unlit point (lambert 0) needs none
        cand = _cull(sc, sc.light, -torch.stack(lv, -1)) & (lambert > 0)[..., None]
        for _, idx, tk, _ in _object_hits(sc, so, lv, cand, normals=False):
            lit.view(-1)[idx[tk < 1.0]] = False
        lambert = lambert * lit
    light = sc.ambient[:, None] + sc.light_power[:, None] * lambert * (6.0 / (4.0 + dist2))
    linear = (albedo * (tex * light * sc.exposure[:, None])[..., None]).clamp(0, 1)  # [B, P, 3]
    image = linear.pow(1 / 2.2)
    if settings.noise > 0:
        image = (image + settings.noise * _gauss(sc.keys, image.shape[1:])).clamp(0, 1)
    depth = t
    if settings.holes:
        cos = sum(nc * dc_ for nc, dc_ in zip(n, d)).abs() / dw.norm(dim=-1)
        hole = (linear.mean(-1) < DARK) | (t > settings.max_depth) | (cos < GRAZING)
        depth = torch.where(hole, torch.full_like(t, math.nan), t)
    # world normals -> camera frame (n_cam = R^T n_world), renormalised: a sphere's (p - c) / r is unit
    # only to float rounding at a distant hit
    ncam = torch.nn.functional.normalize(torch.stack(n, -1) @ sc.rotation, dim=-1)
    return {"image": image.view(b, h, w, 3).permute(0, 3, 1, 2).contiguous(),
            "mask": cls.view(b, h, w).long(),
            "depth": depth.view(b, 1, h, w).float(),
            "normals": ncam.view(b, h, w, 3).permute(0, 3, 1, 2).contiguous()}


def _gauss(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise ``[B, *shape]`` from the scenes' keys: one hash per pair of values, its two
    16-bit halves the uniforms of a Box-Muller pair (tails cut at 4.7 sigma)."""
    n = math.prod(shape)
    h = _fmix(_fmix(keys[:, None] ^ 0x6E015E) ^ torch.arange((n + 1) // 2, device=keys.device)[None])
    u1 = ((h >> 16).float() + 0.5) * (1.0 / 65536)  # in (0, 1): log(u1) is finite
    angle = (h & 0xFFFF).float() * (2 * math.pi / 65536)
    r = (-2 * u1.log()).sqrt()
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], -1).view(len(keys), -1)[:, :n].view(
        len(keys), *shape)


def render_scenes(settings: SceneSettings, seed: int, split: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scenes ``index`` of ``split`` (rendered on ``index``'s device) at the settings' size."""
    return render(draw_scenes(settings, seed, split, index), *settings.size, settings)
