package dev.edgetrim.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/** Contract against apps/conformance/contract.json: every name with the same value, every rule's example. */
public class ContractTest {
    /** Every public constant of Contract, by its (Python) name. */
    private static Map<String, Object> constants() throws IllegalAccessException {
        Map<String, Object> out = new java.util.TreeMap<>();
        for (Field field : Contract.class.getFields()) {
            if (Modifier.isStatic(field.getModifiers())) out.put(field.getName(), field.get(null));
        }
        return out;
    }

    @Test
    public void everyNameHasTheRuntimesValue() throws Exception {
        JSONObject contract = Vectors.json("contract.json");
        Map<String, Object> mine = constants();
        Set<String> theirs = new HashSet<>();
        for (Iterator<String> keys = contract.keys(); keys.hasNext(); ) {
            String name = keys.next();
            if (name.equals("rules")) continue;
            theirs.add(name);
            assertTrue("contract.json defines " + name + ", Contract does not", mine.containsKey(name));
            assertTrue(name + ": " + mine.get(name) + " != " + contract.get(name), sameJSON(mine.get(name), contract.get(name)));
        }
        assertEquals("Contract defines exactly contract.json's names", theirs, mine.keySet());
        assertTrue(theirs.size() > 50);
    }

    @Test
    public void everyRuleGivesTheRuntimesExample() throws Exception {
        Map<String, Object> rules = Map.of(
                "hidden_name(3)", Contract.hiddenName(3),
                "past_names(1)", Contract.pastNames(1),
                "present_names(1)", Contract.presentNames(1),
                "cache_names(1)", Contract.cacheNames(1),
                "method_name('tdtm')", Contract.methodName(Contract.TDTM),
                "prefill_function(96)", Contract.prefillFunction(96),
                "temporal_function(2)", Contract.temporalFunction(2),
                "program_role('tdtm', false)", Contract.programRole(Contract.TDTM, false),
                "temporal_name(3)", Contract.temporalName(3),
                "spatial_name(3)", Contract.spatialName(3));
        JSONObject examples = Vectors.json("contract.json").getJSONObject("rules");
        Set<String> calls = new HashSet<>();
        for (Iterator<String> keys = examples.keys(); keys.hasNext(); ) {
            String call = keys.next();
            calls.add(call);
            assertTrue(call + ": " + rules.get(call) + " != " + examples.get(call), sameJSON(rules.get(call), examples.get(call)));
        }
        assertEquals(rules.keySet(), calls);
    }

    @Test
    public void namingRulesPadLikePython() {
        assertEquals("hidden_00", Contract.hiddenName(0));
        assertEquals("hidden_123", Contract.hiddenName(123));
        assertEquals(List.of("past_key_12", "past_value_12"), Contract.pastNames(12));
        assertEquals(List.of("key_cache_12", "value_cache_12"), Contract.cacheNames(12));
        assertEquals(Contract.PROGRAM, Contract.programRole(Contract.PLAIN, true));
    }

    /** Whether a Java value (String, Integer, List, Map) equals an org.json value. */
    static boolean sameJSON(Object mine, Object theirs) {
        if (mine instanceof String text) return text.equals(theirs);
        if (mine instanceof Integer number) return theirs instanceof Integer other && other.equals(number);
        if (mine instanceof List<?> list) {
            if (!(theirs instanceof JSONArray other) || other.length() != list.size()) return false;
            for (int i = 0; i < list.size(); i++) if (!sameJSON(list.get(i), other.opt(i))) return false;
            return true;
        }
        if (mine instanceof Map<?, ?> map) {
            if (!(theirs instanceof JSONObject other) || other.length() != map.size()) return false;
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                if (!sameJSON(entry.getValue(), other.opt((String) entry.getKey()))) return false;
            }
            return true;
        }
        return false;
    }
}
