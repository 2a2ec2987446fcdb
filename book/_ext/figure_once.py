"""Each figure once in a chapter and its notebook page.

A notebook executed for the book (``SPARSE_SURVEY_FOR_BOOK=1``) puts a note, "(The figure
`NAME` is shown in this notebook's chapter.)", right before each figure it glues for its chapter
(``sparse_survey.tutorial.show_figure``). The figure itself stays in the notebook's outputs, since
the chapter's pasted copy is the image file that output writes; on the notebook's page this
extension removes the image that follows each such note, so that the note stands in its place,
and keeps the image file in the build (Sphinx copies only the images of the pages it writes, and
the chapter's pasted copy is not registered as one of them).
"""

import re

from docutils import nodes

# the note as the page has it, its apostrophe made typographic or not
NOTE = re.compile(r"^\(The figure (\S+) is shown in this notebook['’]s chapter\.\)$")


def leave_figures_to_the_chapter(app, doctree: nodes.document, docname: str) -> None:
    for paragraph in list(doctree.findall(nodes.paragraph)):
        if not NOTE.match(paragraph.astext().strip()):
            continue
        image = paragraph.next_node(nodes.image, ascend=True)
        if image is None:
            continue
        uri = image["candidates"].get("*", image["uri"])
        if uri in app.env.images:  # what Builder.post_process_images would do for this page
            app.builder.images[uri] = app.env.images[uri][1]
        block = image  # the output that holds only this image
        while block.parent is not None and len(block.parent.children) == 1 and \
                not isinstance(block.parent, (nodes.section, nodes.document)):
            block = block.parent
        block.parent.remove(block)


def setup(app):
    app.connect("doctree-resolved", leave_figures_to_the_chapter)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
