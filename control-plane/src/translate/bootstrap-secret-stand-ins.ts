import { GATEWAY_IDENTITY_SECRET, INTERNAL_CA_SECRET } from "@portico/envoy";

/**
 * Stand-ins for the secrets every Envoy holds in its bootstrap (its gateway identity and the
 * internal CA), so that `envoy --mode validate` of a group's resources can build the clusters
 * that name them: Envoy refuses a reference to a static secret it does not have, and loads the
 * key pair it names. A self-signed throwaway, used for nothing else; the real files stay on each
 * Envoy's host.
 */
const STAND_IN_CERTIFICATE = `
-----BEGIN CERTIFICATE-----
MIIBsDCCAVegAwIBAgIUSWIOl/rnM3mPIuIdMIM2/AISJfcwCgYIKoZIzj0EAwIw
LTErMCkGA1UEAwwic3RhbmQtaW4gZm9yIGVudm95IC0tbW9kZSB2YWxpZGF0ZTAg
Fw0yNjEyMDYyMzU4MzhaGA8yMTI2MTExMjIzNTgzOFowLTErMCkGA1UEAwwic3Rh
bmQtaW4gZm9yIGVudm95IC0tbW9kZSB2YWxpZGF0ZTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABNbBe6jBRahnn66owWYsuhyal8FL+YzLajP5v0YzTa+MWcj0pbGR
1kGtDMf8U4GBfD8PUnqBOPGPv5YDWSrLc4ejUzBRMB0GA1UdDgQWBBQUYvXNpgca
HLloyP7Z44H0y0p3wzAfBgNVHSMEGDAWgBQUYvXNpgcaHLloyP7Z44H0y0p3wzAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIFIset6ffSlUUHIglMB6
WG8yw3ed1sXcndr0P39BRgYFAiBL20HipK3Hgj/9HqLSs2JIuxeu5i91NdEKqIFB
frQVTg==
-----END CERTIFICATE-----
`;

const STAND_IN_KEY = `
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZr8Uml2k9r47fVIs
NkIIYE6My5ZGkTHDcpL2gNMP4FyhRANCAATWwXuowUWoZ5+uqMFmLLocmpfBS/mM
y2oz+b9GM02vjFnI9KWxkdZBrQzH/FOBgXw/D1J6gTjxj7+WA1kqy3OH
-----END PRIVATE KEY-----
`;

export function bootstrapSecretStandIns(): object[] {
  return [
    {
      name: GATEWAY_IDENTITY_SECRET,
      tls_certificate: {
        certificate_chain: { inline_string: STAND_IN_CERTIFICATE },
        private_key: { inline_string: STAND_IN_KEY },
      },
    },
    { name: INTERNAL_CA_SECRET, validation_context: { trusted_ca: { inline_string: STAND_IN_CERTIFICATE } } },
  ];
}
