"""What a page built with Gradio shows, read from its config (no browser): each component by its elem_id,
the layout blocks around it, and the event handlers called the way Gradio calls them."""

from __future__ import annotations


class PageConfig:
    def __init__(self, blocks):
        self.blocks, self.config = blocks, blocks.get_config_file()
        self.by_id = {c["id"]: c for c in self.config["components"]}
        self._around: dict[str, tuple[dict, list[dict]]] = {}  # elem_id -> (component, blocks around it, innermost first)

        def walk(node, outer):
            component = self.by_id.get(node["id"])
            elem_id = component and component["props"].get("elem_id")
            if elem_id and elem_id not in self._around:
                self._around[elem_id] = (component, outer)
            for child in node.get("children", []):
                walk(child, ([component] if component else []) + outer)
        walk(self.config["layout"], [])

    def has(self, elem_id: str) -> bool:
        return elem_id in self._around

    def component(self, elem_id: str) -> dict:
        return self._around[elem_id][0]

    def props(self, elem_id: str) -> dict:
        return self.component(elem_id)["props"]

    def choices(self, elem_id: str) -> list:
        return [c[0] if isinstance(c, (list, tuple)) else c for c in self.props(elem_id)["choices"]]

    def around(self, elem_id: str, kind: str) -> list[dict]:
        """The blocks of one kind (row, column, accordion, tabitem, ...) around the component, innermost first."""
        return [block for block in self._around[elem_id][1] if block["type"] == kind]

    def row_of(self, elem_id: str):
        rows = self.around(elem_id, "row")
        return rows[0]["id"] if rows else None

    def accordion_of(self, elem_id: str) -> str | None:
        """The label of the innermost accordion around the component; None when it is always in view."""
        accordions = self.around(elem_id, "accordion")
        return accordions[0]["props"]["label"] if accordions else None

    def _event(self, elem_id: str) -> int:
        """The first event that takes the component as an input, or else is triggered by it (a button)."""
        target = self.component(elem_id)["id"]
        events = self.config["dependencies"]
        takes_it = [i for i, d in enumerate(events) if target in d["inputs"]]
        return takes_it[0] if takes_it else next(i for i, d in enumerate(events) if target in d["targets"])

    def handler(self, elem_id: str):
        """A function that calls the handler of the component's event (see ``_event``) as Gradio would: every
        input at the value the page shows, except those given by elem_id; it returns the handler's reply."""
        index = self._event(elem_id)
        inputs, function = self.config["dependencies"][index]["inputs"], self.blocks.fns[index].fn
        elem_ids = {c["id"]: c["props"].get("elem_id") for c in self.config["components"]}

        def call(**values):
            return function(*[values.get(elem_ids[i], self.by_id[i]["props"].get("value")) for i in inputs])
        return call

    def outputs(self, elem_id: str, reply) -> dict:
        """A reply of the component's event handler (a list, one item per output) by the outputs' elem_ids."""
        outputs = self.config["dependencies"][self._event(elem_id)]["outputs"]
        reply = list(reply) if isinstance(reply, (list, tuple)) else [reply]
        return {self.by_id[i]["props"].get("elem_id") or i: value for i, value in zip(outputs, reply)}
