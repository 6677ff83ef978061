//! The CUDA launchers against the kernels they launch, read from the sources (no GPU or CUDA
//! build needed): every `launch!` in `src/ops/cuda/` names a kernel its module's `.cu` file
//! defines (with the `_f32`/`_bf16` suffixes it asks for), and passes exactly as many device
//! buffers as the kernel has pointer parameters, first, then as many scalars as the rest. A
//! mismatch here would be a wrong kernel argument list at run time (undefined behaviour), or a
//! "named symbol not found" on the GPU.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// Splits at the commas outside parentheses and brackets.
fn top_level_split(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' | '>' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The text inside the parentheses that open at or after `from` (balanced).
fn parenthesised(s: &str, from: usize) -> &str {
    let open = from + s[from..].find('(').expect("(");
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &s[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after {from}")
}

/// Each kernel of a `.cu` file: its full name → whether each parameter is a pointer.
fn kernels(cu: &str) -> HashMap<String, Vec<bool>> {
    let cu = cu.replace("\\\n", " ");
    let pointers = |params: &str| -> Vec<bool> {
        top_level_split(params)
            .iter()
            .map(|p| p.contains('*'))
            .collect()
    };
    let mut out = HashMap::new();
    for (at, _) in cu.match_indices("KERNEL_DTYPES(") {
        if cu[..at].ends_with("#define ") {
            continue;
        }
        let args = top_level_split(parenthesised(&cu, at));
        let macro_def = format!("#define {}(T)", args[1]);
        let def = cu.find(&macro_def).expect("the PARAMS macro") + macro_def.len();
        let params = pointers(parenthesised(&cu, def));
        for suffix in ["f32", "bf16"] {
            out.insert(format!("{}_{suffix}", args[0]), params.clone());
        }
    }
    let head = "extern \"C\" __global__ void ";
    for (at, _) in cu.match_indices(head) {
        let rest = &cu[at + head.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name.starts_with("NAME") {
            continue; // the macro's own definition
        }
        out.insert(name, pointers(parenthesised(&cu, at + head.len())));
    }
    out
}

/// Every `launch!(dev, MODULE, kernel, cfg, bufs: [..], vals: [..])` of a launcher file:
/// (module, full kernel names, buffers, scalars).
fn launches(rs: &str) -> Vec<(String, Vec<String>, usize, usize)> {
    let mut out = Vec::new();
    for (at, _) in rs.match_indices("launch!(") {
        if rs[..at].ends_with("macro_rules! ") || rs[..at].ends_with("use ") {
            continue;
        }
        let body = parenthesised(rs, at);
        let parts = top_level_split(body);
        let module = parts[1].clone();
        let kernel = &parts[2];
        let names = if let Some(rest) = kernel.strip_prefix("kernel_name::<") {
            let (ty, rest) = rest.split_once(">(\"").expect("kernel_name::<T>(\"…\")");
            let name = rest.trim_end_matches("\")");
            match ty {
                "T" => vec![format!("{name}_f32"), format!("{name}_bf16")],
                ty => vec![format!("{name}_{ty}")],
            }
        } else {
            vec![kernel.trim_matches('"').to_string()]
        };
        let list = |key: &str| -> usize {
            let p = parts
                .iter()
                .find_map(|p| p.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in launch!({body})"));
            let inner = p.trim().trim_start_matches('[').trim_end_matches(']');
            top_level_split(inner).len()
        };
        out.push((module, names, list("bufs:"), list("vals:")));
    }
    out
}

/// Every launch matches its kernel's parameter list (see the module doc).
#[test]
fn every_launch_matches_its_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cu = HashMap::new();
    for entry in fs::read_dir(root.join("kernels")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_uppercase();
            cu.insert(stem, kernels(&fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(cu.contains_key("ELEMENTWISE") && cu.contains_key("LOSS"));
    let mut checked = 0;
    for entry in fs::read_dir(root.join("src/ops/cuda")).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        for (module, names, bufs, vals) in launches(&text) {
            let file = cu
                .get(&module)
                .unwrap_or_else(|| panic!("{}: no kernels/{}.cu", path.display(), module));
            for name in names {
                let params = file
                    .get(&name)
                    .unwrap_or_else(|| panic!("{}: {module} has no kernel {name}", path.display()));
                let ptrs = params.iter().take_while(|&&p| p).count();
                assert_eq!(
                    (ptrs, params.len() - ptrs),
                    (bufs, vals),
                    "{}: {name} takes {ptrs} pointers then {} scalars ({params:?}); the launch passes {bufs} and {vals}",
                    path.display(),
                    params.len() - ptrs
                );
                checked += 1;
            }
        }
    }
    // 20 kernels in elementwise.cu, loss.cu and adamw.cu; attention adds its own.
    assert!(checked >= 20, "only {checked} launches found");
}

/// The parser finds a planted mismatch: a kernel with one scalar more than the launch passes,
/// and a pointer after a scalar, fail the comparison.
#[test]
fn the_parser_sees_a_mismatch() {
    let cu =
        "#define P(T) (const T *x, T *y, int n, float eps)\nKERNEL_DTYPES(k, P, (x, y, n, eps))\n\
              extern \"C\" __global__ void j_f32(const float *a, int n, float *b) {}";
    let k = kernels(cu);
    assert_eq!(k["k_bf16"], vec![true, true, false, false]);
    assert_eq!(k["j_f32"], vec![true, false, true]);
    let rs = "launch!(dev, M, kernel_name::<T>(\"k\"), cfg(a, b), bufs: [&x, &y], vals: [int(n, \"n\")?]);";
    let l = launches(rs);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].1, vec!["k_f32".to_string(), "k_bf16".to_string()]);
    assert_eq!((l[0].2, l[0].3), (2, 1));
    let ptrs = k["k_f32"].iter().take_while(|&&p| p).count();
    assert_ne!((ptrs, k["k_f32"].len() - ptrs), (l[0].2, l[0].3));
}
