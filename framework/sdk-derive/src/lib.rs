//! `#[derive(Record)]`: a struct with named fields as the columns of a table.
//!
//! Each field becomes its type's columns ([`quarry_sdk::Data`]), named after the field (a
//! composite field's columns are prefixed with its name: `pos: (f64, f64)` is `pos__0`,
//! `pos__1`), in declaration order. The generated impl builds and reads the fields' columns as a
//! tuple of the fields' builders and readers, so it is as fast as a hand-written one.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, parse_macro_input, parse_quote};

/// Implements `quarry_sdk::Data` for a struct with named fields whose types implement it.
#[proc_macro_derive(Record)]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match record(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn record(mut input: DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => fields.named.iter().collect::<Vec<_>>(),
            _ => {
                return Err(syn::Error::new_spanned(
                    name,
                    "#[derive(Record)] needs named fields: they name the table's columns",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                name,
                "#[derive(Record)] works on structs (a struct's fields are a table's columns)",
            ));
        }
    };
    for param in input.generics.type_params_mut() {
        param.bounds.push(parse_quote!(::quarry_sdk::Data));
    }
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let sdk = quote!(::quarry_sdk);
    let idents: Vec<_> = fields.iter().filter_map(|f| f.ident.clone()).collect();
    let types: Vec<_> = fields.iter().map(|f| f.ty.clone()).collect();
    let columns: Vec<String> = idents
        .iter()
        .map(|i| i.to_string().trim_start_matches("r#").to_string())
        .collect();
    let index: Vec<syn::Index> = (0..fields.len()).map(syn::Index::from).collect();
    let parts: Vec<_> = (0..fields.len())
        .map(|i| format_ident!("__part{i}"))
        .collect();
    Ok(quote! {
        impl #impl_generics #sdk::Data for #name #type_generics #where_clause {
            const WIDTH: usize = 0 #(+ <#types as #sdk::Data>::WIDTH)*;
            const FIXED_WIDTH: bool = true #(&& <#types as #sdk::Data>::FIXED_WIDTH)*;
            type Builder = (#(<#types as #sdk::Data>::Builder,)*);
            type Reader<'__a> = (#(<#types as #sdk::Data>::Reader<'__a>,)*);

            fn fields(name: &str, nullable: bool, out: &mut ::std::vec::Vec<#sdk::arrow_schema::Field>) {
                #(<#types as #sdk::Data>::fields(&#sdk::data::child_name(name, #columns), nullable, out);)*
            }
            fn builder(capacity: usize) -> Self::Builder {
                (#(<#types as #sdk::Data>::builder(capacity),)*)
            }
            #[inline(always)]
            fn append(builder: &mut Self::Builder, value: Self) {
                let #name { #(#idents),* } = value;
                #(<#types as #sdk::Data>::append(&mut builder.#index, #idents);)*
            }
            #[inline(always)]
            fn append_null(builder: &mut Self::Builder) {
                #(<#types as #sdk::Data>::append_null(&mut builder.#index);)*
            }
            fn finish(builder: Self::Builder, out: &mut ::std::vec::Vec<#sdk::arrow_array::ArrayRef>) {
                #(<#types as #sdk::Data>::finish(builder.#index, out);)*
            }
            fn reader<'__a>(
                columns: #sdk::data::Columns<'__a>,
            ) -> ::std::result::Result<Self::Reader<'__a>, #sdk::data::DataError> {
                let __rest = columns;
                #(let (#parts, __rest) = __rest.split(<#types as #sdk::Data>::WIDTH)?;)*
                let _ = __rest;
                Ok((#(<#types as #sdk::Data>::reader(#parts)?,)*))
            }
            #[inline(always)]
            fn read(
                reader: &Self::Reader<'_>,
                row: usize,
            ) -> ::std::result::Result<Self, #sdk::data::DataError> {
                Ok(#name { #(#idents: <#types as #sdk::Data>::read(&reader.#index, row)?,)* })
            }
            fn is_null(_reader: &Self::Reader<'_>, _row: usize) -> bool {
                false
            }
        }
    })
}
