"""How a case's model is split over devices: tensor parallel (tp) x data parallel (dp), or
expert parallel (ep: a mixture of experts' experts split over the devices, its batch too).

Cases and records carry it as the plain dict {"tp": n, "dp": m} (it crosses process boundaries as
JSON); code reads it through Layout.of, so the dict's defaults live in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    dp: int = 1
    ep: int = 1

    @classmethod
    def of(cls, mesh: "dict | Layout | None") -> "Layout":
        """A case's layout dict (missing axes are 1), a Layout, or None (one device)."""
        if mesh is None:
            return cls()
        if isinstance(mesh, Layout):
            return mesh
        return cls(mesh.get("tp", 1), mesh.get("dp", 1), mesh.get("ep", 1))

    @property
    def devices(self) -> int:
        return self.tp * self.dp * self.ep

    def as_dict(self) -> dict:
        """The case's dict (ep only where experts are split: a dense layout's dict is unchanged)."""
        return {"tp": self.tp, "dp": self.dp, **({"ep": self.ep} if self.ep > 1 else {})}

    def __str__(self) -> str:
        return f"tp={self.tp},dp={self.dp}" + (f",ep={self.ep}" if self.ep > 1 else "")


def across_hosts(layout: Layout, hosts: int) -> list[str]:
    """The axes whose groups of devices span more than one host, for devices numbered host by host
    and the mesh's innermost axis (tp) varying fastest: an axis crosses when the devices one of
    its groups covers (its size times the axes inside it) are more than a host holds."""
    if hosts <= 1:
        return []
    per_host = layout.devices // hosts
    out, inner = [], 1
    for name, size in (("tp", layout.tp), ("ep", layout.ep), ("dp", layout.dp)):
        if size > 1 and inner * size > per_host:
            out.append(name)
        inner *= size
    return out
