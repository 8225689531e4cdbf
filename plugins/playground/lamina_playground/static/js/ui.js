// Small DOM helpers shared by the tabs.

export const $ = (id) => document.getElementById(id);

// el("td", {class: "x"}, "text", childNode): an element with attributes and children.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

// A table from rows of plain objects; `columns` maps header -> (row) => cell content.
export function fillTable(table, rows, columns, empty = "Nothing here.") {
  const headers = Object.keys(columns);
  table.replaceChildren(
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      rows.length
        ? rows.map((row) => el("tr", {}, headers.map((h) => el("td", {}, columns[h](row) ?? ""))))
        : el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, empty)),
    ),
  );
}

export function fillSelect(select, options, keep = select.value) {
  select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
  if (options.some(([value]) => value === keep)) select.value = keep;
}

export function showError(where, error) {
  where.replaceChildren(el("span", { class: "error" }, error.message || String(error)));
}

export const json = (value) => JSON.stringify(value, null, 2);
