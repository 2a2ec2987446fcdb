"""Alt text for the book's figures, from the words the book already has for them.

A figure pasted from a notebook (``{glue}``) or shown in a notebook's output has no alt text of
its own, and HTML then falls back to its hashed file name. This extension gives every such image
the caption that follows it (the italic paragraph after a pasted figure) or, where none does,
the title of the section it is in, prefixed "Figure:". An image that has alt text keeps it.
"""

from docutils import nodes


def caption_after(image: nodes.image) -> str | None:
    """The text of the italic paragraph right after the block that holds ``image``, if any."""
    block = image
    while block.parent is not None and not isinstance(block.parent, (nodes.section,
                                                                     nodes.document)):
        block = block.parent
    following = block.next_node(descend=False, siblings=True)
    if isinstance(following, nodes.paragraph) and len(following.children) == 1 and \
            isinstance(following.children[0], nodes.emphasis):
        return following.astext()
    return None


def section_title(image: nodes.image) -> str | None:
    """The title of the innermost section holding ``image``."""
    section = image.parent
    while section is not None and not isinstance(section, nodes.section):
        section = section.parent
    title = section.next_node(nodes.title) if section is not None else None
    return title.astext() if title is not None else None


def add_alt_text(app, doctree: nodes.document, docname: str) -> None:
    for image in doctree.findall(nodes.image):
        if image.get("alt"):
            continue
        caption = caption_after(image)
        title = section_title(image)
        if caption:
            image["alt"] = caption
        elif title:
            image["alt"] = f"Figure: {title}"


def setup(app):
    app.connect("doctree-resolved", add_alt_text)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
